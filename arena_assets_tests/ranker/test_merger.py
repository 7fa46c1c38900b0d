"""The merger: the merged model scores like the adapter model, and a bad merge or a full disk fails loudly."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena_assets.ranker import merger, trainer
from arena_assets.ranker.artifacts import MANIFEST_NAME
from arena_assets.ranker.config import MergeConfig, TrainConfig, save_config
from arena_assets.ranker.data import encode_frame, read_pairs
from arena_assets.ranker.head import LetterHead, score_sequences
from arena_assets.ranker.prompt import PromptTemplate, letter_token_ids
from arena_assets_tests.ranker.conftest import PairFiles, TrainedRun

PROBE_ROWS = 16
FP32_PARITY = 1e-4  # fp32 merge: W + s*B@A rounds differently from the two-path sum, far below this


class Adapter(NamedTuple):
    """A trained adapter directory and the backbone it belongs to."""

    backbone: Path
    adapter_dir: Path


def _letter_logits(model: torch.nn.Module, tokenizer: Any, frame: Any) -> torch.Tensor:
    """Letter logits [N, 2] of a frame's pairs through the scorer's batching."""
    encoded = encode_frame(PromptTemplate.from_tokenizer(tokenizer), frame, max_length=384, rebalance=True)
    head = LetterHead(model, letter_token_ids(tokenizer)).eval()
    return torch.from_numpy(score_sequences(head, encoded.input_ids, pad_token_id=tokenizer.pad_token_id,
                                            token_budget=4096, max_batch_rows=8, device=torch.device("cpu")))


@pytest.fixture(scope="module")
def small_adapter(
    small_files: PairFiles, make_train_config: Callable[..., TrainConfig], demo_backbone: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Adapter:
    """A few steps of training: an adapter whose lora_B weights are no longer zero."""
    out = tmp_path_factory.mktemp("small_adapter") / "adapter"
    trainer.train(make_train_config(small_files, out, max_steps=2, max_validation_rows=2))
    return Adapter(demo_backbone, out)


def _merge_config(adapter: Adapter, output_dir: Path) -> MergeConfig:
    return MergeConfig(backbone=str(adapter.backbone), adapter_dir=str(adapter.adapter_dir),
                       output_dir=str(output_dir), max_length=384)


@pytest.mark.slow
def test_merged_model_equals_adapter_model_on_a_probe_batch(
    merged_stage1: Path, stage1_run: TrainedRun, demo_backbone: Path, hard_label_files: PairFiles,
) -> None:
    parity = json.loads((merged_stage1 / "parity.json").read_text())
    assert parity["parity_passed"] and parity["dtype"] == "float32"
    assert parity["max_abs_logit_diff"] <= FP32_PARITY and parity["probe_rows"] == len(merger.PROBE_PAIRS)
    assert json.loads((merged_stage1 / MANIFEST_NAME).read_text())["kind"] == "merged_model"
    assert not list(merged_stage1.parent.glob("model.tmp-*"))

    tokenizer = AutoTokenizer.from_pretrained(merged_stage1)
    frame = read_pairs(hard_label_files.validation).head(PROBE_ROWS)
    merged = AutoModelForCausalLM.from_pretrained(merged_stage1, dtype=torch.float32)
    assert not any("lora" in name for name in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(demo_backbone, dtype=torch.float32)
    base_logits = _letter_logits(base, tokenizer, frame)
    adapter_logits = _letter_logits(PeftModel.from_pretrained(base, stage1_run.adapter_dir), tokenizer, frame)
    merged_logits = _letter_logits(merged, tokenizer, frame)

    torch.testing.assert_close(merged_logits, adapter_logits, rtol=0, atol=FP32_PARITY)
    # The adapter matters on this batch, so the parity above is not the backbone compared with itself.
    assert (adapter_logits - base_logits).abs().max() > 0.5


@pytest.mark.slow
def test_a_wrong_merge_fails_the_parity_check(
    small_adapter: Adapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_merge = LoraModel.merge_and_unload

    def merge_with_a_lost_update(self: LoraModel, *args: Any, **kwargs: Any) -> torch.nn.Module:
        """peft's merge, then one projection's delta dropped, as a merge that skipped a module would."""
        merged = real_merge(self, *args, **kwargs)
        base = AutoModelForCausalLM.from_pretrained(small_adapter.backbone, dtype=torch.float32)
        with torch.no_grad():
            merged.model.layers[1].mlp.down_proj.weight.copy_(base.model.layers[1].mlp.down_proj.weight)
        return merged

    monkeypatch.setattr(LoraModel, "merge_and_unload", merge_with_a_lost_update)
    config_path = save_config(_merge_config(small_adapter, tmp_path / "merged"), tmp_path / "merge.json")
    # From a shell the command fails; under Dagster the same result is the blocking check's failure.
    with pytest.raises(SystemExit, match="merged model differs from the adapter model"):
        merger.main(["--config", str(config_path)])
    parity = json.loads((tmp_path / "merged" / "parity.json").read_text())
    assert not parity["parity_passed"] and parity["max_abs_logit_diff"] > parity["atol"] == FP32_PARITY


@pytest.mark.slow
def test_a_non_finite_adapter_fails_the_merge(small_adapter: Adapter, tmp_path: Path) -> None:
    corrupt = tmp_path / "adapter"
    shutil.copytree(small_adapter.adapter_dir, corrupt)
    weights = load_file(corrupt / "adapter_model.safetensors")
    name = next(n for n in sorted(weights) if "lora_B" in n)
    weights[name][0, 0] = float("nan")  # a diverged or bit-rotted adapter
    save_file(weights, corrupt / "adapter_model.safetensors")

    with pytest.raises(RuntimeError, match="non-finite letter logits"):
        merger.merge(_merge_config(Adapter(small_adapter.backbone, corrupt), tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()


@pytest.mark.slow
def test_too_little_free_disk_fails_before_writing(
    small_adapter: Adapter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    full = SimpleNamespace(total=10**12, used=10**12 - 1000, free=1000)
    monkeypatch.setattr(merger.shutil, "disk_usage", lambda path: full)

    with pytest.raises(OSError, match=r"0\.0 GiB free, the merged model needs about"):
        merger.merge(_merge_config(small_adapter, tmp_path / "merged"))
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob("merged.tmp-*"))
