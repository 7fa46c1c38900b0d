"""build_embedded_default: same bytes per seed, skips what is current, spares real data, loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena_assets.embedded import (
    GENERATOR_VERSION,
    STAMP_NAME,
    EmbeddedDefault,
    build_embedded_default,
    generate_sample_data,
    write_sample_data,
)
from arena_assets.ranker.artifacts import file_sha256
from arena_assets.ranker.prompt import PromptTemplate, letter_token_ids
from arena_assets.settings import Settings
from arena_assets_tests.embedded.conftest import demo_settings


def test_same_seed_gives_identical_bytes(
    embedded: EmbeddedDefault, settings: Settings, tmp_path: Path
) -> None:
    other = demo_settings(tmp_path)
    hashes = write_sample_data(generate_sample_data(settings.data_seed), other)
    assert hashes == {
        path.relative_to(embedded.raw_dir).as_posix(): file_sha256(path) for path in embedded.files.values()
    }
    assert len(hashes) == 8


def test_stamp_records_version_seed_hashes_and_counts(embedded: EmbeddedDefault, settings: Settings) -> None:
    stamp = json.loads(embedded.stamp.read_text())
    assert stamp["status"] == "complete"
    assert (stamp["generator_version"], stamp["seed"]) == (GENERATOR_VERSION, settings.data_seed)
    assert stamp["files"]["wsdm/train.parquet"] == file_sha256(embedded.files["wsdm_train"])
    assert stamp["stats"]["lmsys_33k"]["duplicates_of_55k"] > 0
    assert embedded.stats == stamp["stats"]


def test_second_build_skips_current_outputs(embedded: EmbeddedDefault, settings: Settings) -> None:
    before = {path: path.stat().st_mtime_ns for path in embedded.files.values()}
    again = build_embedded_default(settings)
    assert not again.wrote_data and not again.built_backbone
    assert {path: path.stat().st_mtime_ns for path in again.files.values()} == before


def test_refuses_to_overwrite_files_it_did_not_write(tmp_path: Path) -> None:
    settings = demo_settings(tmp_path)
    settings.wsdm_train_path.parent.mkdir(parents=True)
    real = pd.DataFrame({"id": ["x"], "prompt": ["real data"]})
    real.to_parquet(settings.wsdm_train_path)
    with pytest.raises(FileExistsError, match="not written by the embedded default"):
        build_embedded_default(settings)
    assert pd.read_parquet(settings.wsdm_train_path).equals(real)


def test_refuses_to_replace_a_real_backbone(tmp_path: Path) -> None:
    settings = demo_settings(tmp_path)
    settings.backbone.mkdir(parents=True)
    (settings.backbone / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not the embedded tiny model"):
        build_embedded_default(settings)
    assert not settings.raw_dir.exists()


def test_backbone_loads_and_scores_a_judge_prompt(embedded: EmbeddedDefault) -> None:
    tokenizer = AutoTokenizer.from_pretrained(embedded.backbone)
    model = AutoModelForCausalLM.from_pretrained(embedded.backbone)
    for letter in (" A", " B"):
        assert len(tokenizer.encode(letter, add_special_tokens=False)) == 1
    letter_ids = letter_token_ids(tokenizer)
    row = pd.read_parquet(embedded.files["wsdm_train"]).iloc[0]
    template = PromptTemplate.from_tokenizer(tokenizer)
    fields = template.tokenize_fields([row["prompt"], row["response_a"], row["response_b"]])
    encoded = template.encode_ids(*fields, max_length=384)
    assert len(encoded.input_ids) <= 384
    with torch.no_grad():
        logits = model(torch.tensor([encoded.input_ids])).logits[0, -1, list(letter_ids)]
    assert torch.isfinite(logits).all()
    assert (embedded.backbone / STAMP_NAME).is_file()


def test_judge_prompt_words_are_whole_tokens(embedded: EmbeddedDefault) -> None:
    """The tokenizer saw the fixed judge text, so it costs few tokens of the demo's 384."""
    template = PromptTemplate.from_tokenizer(AutoTokenizer.from_pretrained(embedded.backbone))
    assert template.fixed_length < 200
