"""A Llama-style backbone whose tokenizer ships no pad token (as Llama-3's and Mistral's do) runs the ranker:
stage-1 training, merging and scoring, the same code the tiny Qwen2 runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoConfig, AutoTokenizer

from arena_assets.embedded.tiny_model import TinyModelSpec, build_tiny_backbone
from arena_assets.ranker import merger, scorer, trainer
from arena_assets.ranker.artifacts import LOGIT_COLUMNS, LOGITS_NAME, PARITY_NAME
from arena_assets.ranker.collate import collate_rows
from arena_assets.ranker.config import MergeConfig, ScoreConfig, TrainConfig
from arena_assets.ranker.data import encode_frame, read_pairs
from arena_assets.ranker.prompt import PromptTemplate, load_tokenizer
from arena_assets_tests.conftest import tiny_corpus
from arena_assets_tests.ranker.conftest import PairFiles


@pytest.fixture(scope="module")
def llama_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llama") / "tiny-llama"
    return build_tiny_backbone(out, corpus=tiny_corpus(), seed=0, spec=TinyModelSpec(architecture="llama"))


def test_a_tokenizer_without_pad_token_gets_eos_and_collates(
    llama_backbone: Path, small_files: PairFiles
) -> None:
    assert AutoTokenizer.from_pretrained(llama_backbone).pad_token is None  # as shipped, like Llama-3's
    tokenizer = load_tokenizer(str(llama_backbone))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|eot_id|>")

    template = PromptTemplate.from_tokenizer(tokenizer)
    encoded = encode_frame(
        template, read_pairs(small_files.validation).head(4), max_length=384, rebalance=True
    )
    assert tokenizer.decode(encoded.input_ids[0]).startswith("<|begin_of_text|><|start_header_id|>system")
    batch = collate_rows(
        [{"input_ids": ids} for ids in encoded.input_ids], pad_token_id=tokenizer.pad_token_id
    )
    lengths = [len(ids) for ids in encoded.input_ids]
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert batch["input_ids"].dtype.is_floating_point is False


def test_a_backbone_without_pad_token_trains_merges_and_scores(
    llama_backbone: Path,
    small_files: PairFiles,
    make_train_config: Callable[..., TrainConfig],
    tmp_path: Path,
) -> None:
    adapter = tmp_path / "adapter"
    metrics = trainer.train(
        make_train_config(
            small_files, adapter, backbone=str(llama_backbone), max_steps=3, max_validation_rows=8
        )
    )
    assert metrics["steps"] == 3 and np.isfinite(metrics["val_log_loss"])
    assert (
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    )

    merged = tmp_path / "merged"
    report = merger.merge(
        MergeConfig(
            backbone=str(llama_backbone), adapter_dir=str(adapter), output_dir=str(merged), max_length=384
        )
    )
    assert report["parity_passed"] and json.loads((merged / PARITY_NAME).read_text())["parity_passed"]
    assert AutoConfig.from_pretrained(merged).model_type == "llama"

    scores = tmp_path / "scores"
    scorer.score(
        ScoreConfig(
            model=str(merged),
            input_path=str(small_files.open_pairs),
            output_dir=str(scores),
            max_length=384,
            token_budget=4096,
        )
    )
    logits = pd.read_parquet(scores / LOGITS_NAME)
    assert len(logits) == len(pd.read_parquet(small_files.open_pairs))
    assert np.isfinite(logits[list(LOGIT_COLUMNS)].to_numpy()).all()


def test_rows_of_one_length_give_the_same_llama_logits_without_a_mask(llama_backbone: Path) -> None:
    """A Llama config has no layer kinds: the decoder builds (no) mask itself for the mask-free pass."""
    import torch

    from arena_assets.ranker import modeling
    from arena_assets.ranker.head import letter_logits

    model = modeling.load_backbone(str(llama_backbone), dtype=torch.float32, device=torch.device("cpu"),
                                   attn_implementation="sdpa")  # fmt: skip
    ids = torch.randint(10, 1000, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        masked = letter_logits(model, ids, torch.ones_like(ids), (5, 6))
        unmasked = letter_logits(model, ids, None, (5, 6))
    torch.testing.assert_close(unmasked, masked, rtol=0, atol=1e-5)
