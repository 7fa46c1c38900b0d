"""Time the ranker's trainer and scorer on a GPU: the straightforward recipe beside the fast paths.

    PYTHONPATH=. python benchmarks/gpu_bench.py --out $OUT [--only train_2048_plain,...] [--real .e2e]

Every variant runs the real entry points (`python -m arena_assets.ranker.trainer|scorer --config F`) as
child processes, so what is timed is what the assets run. Prints one table at the end (tokens/s, share of
the measured dense bf16 rate, peak memory, padding, against the straightforward recipe) and writes
`results.json` under --out: `env.dense_bf16_tflops`, then one key per variant (`train_2048_plain`,
`train_2048_*`, `train_4096_*`, `train_real_*`, `score_2048_*`, `score_real_*`; the table VARIANTS) holding
the entry point's metrics (`train_tokens_per_second` or `scoring_tokens_per_second`, `peak_memory_gb`,
`padding_fraction`), and `loss_2048`: the straightforward and the fast (packed) trainer over the same 50
steps, each against the straightforward recipe in fp32 from the same weights. On an H200 a 2-row variant
takes about 25 s, a 16-row one 60-90 s, the bf16 loss curves 2.5 min and the fp32 one about 6 min; --only
picks the variants of one run, --loss-runs the loss check's curves (`benchmarks/loss_check.py` compares
curves from several calls). With several GPUs visible, the variants and the loss check's three curves
run side by side, one child process per GPU (each variant still on one GPU). `*_profiled` variants record
two steps with torch.profiler and print where the device time went; `*_80gb` variants cap torch's allocator
at what an 80 GB GPU leaves a process (GPU_80GB).

The 14B shape is a config.json plus a tokenizer; the trainer and scorer build it with random weights on the
GPU (`random_init`), so no download is needed. Equal-length rows fill max_length exactly; the `*_real`
variants take the WSDM-like rows that `python benchmarks/gpu_e2e.py data --dir .e2e` writes (median about
1,100 tokens, tail to 4,096) with that run's tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "embedded" / "tiny-qwen2"
NON_EMBEDDING_PARAMS_14B = 13.2e9
QWEN14B_SHAPE = dict(
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=48,
    num_attention_heads=40,
    num_key_value_heads=8,
    vocab_size=152064,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

# The straightforward recipe (peft's fp32 adapters, every layer recomputed, no liger) against the fast paths.
PLAIN = {
    "adapter_compute_dtype": False,
    "gradient_checkpointing": 1.0,
    "use_liger": "off",
    "recompute_lora_dropout": False,
    "lora_update_in_matmul": False,
}
FAST = {"adapter_compute_dtype": True, "gradient_checkpointing": 0.0, "use_liger": "auto"}
PACKED = {**FAST, "pack_sequences": True}
# The qwen14b recipe's memory settings (configs/qwen14b): 2 x 4096-token passes, no layer recomputed (18 of
# 48 before 2026-11-29: the `_three_eighths` variants).
RECIPE = {**FAST, "gradient_checkpointing": 0.0, "micro_batch_tokens": 8192}
# The loss check's tolerance, relative to the straightforward bf16 recipe's own distance from fp32: the fast
# path may stray from the fp32 curve at most this many times as far (per-step mean and largest difference).
LOSS_CURVE_SLACK = 1.5

FP8 = {"use_liger": "auto", "pack_sequences": True, "fp8_matmuls": True, "fp8_min_same_winner": 0.0}
# Training in e4m3: random weights amplify its rounding (the loss check's fast_fp8 curve), so, as in scoring,
# the trainer's own check only reports here (fp8_grad_cosine in the metrics), with no minimum.
FP8_TRAIN = {"fp8_matmuls": True, "fp8_min_grad_cosine": -1.0}
# Only the frozen projections' input gradient in e4m3: the forward, and so the loss, stays bf16's.
FP8_GRAD_TRAIN = {**FP8_TRAIN, "fp8_forward": False}
# An 80 GB GPU (an H100) on a larger one: torch's allocator capped at what such a GPU leaves a process, its
# 79.19 GiB less about 0.6 GiB for the CUDA context. Where it runs out, an 80 GB GPU would (train_variant).
GPU_80GB = {"gpu_memory_gib": 78.6}
STEP_16 = {"global_batch_size": 16}
ROWS_4 = {"per_device_batch_size": 4, "global_batch_size": 4}
# name -> (entry point, max length or "real" for the WSDM-like rows at 4096, config overrides)
VARIANTS: dict[str, tuple[str, int | str, dict]] = {
    "train_2048_plain": ("train", 2048, PLAIN),
    "train_2048_fast": ("train", 2048, FAST),
    "train_2048_fast_kept_dropout": ("train", 2048, {**FAST, "recompute_lora_dropout": False}),
    # LoRA dropout replayed by torch's own kernels instead of drawn inside lora_A's (ranker/fused_dropout.py)
    "train_2048_fast_torch_dropout": ("train", 2048, {**FAST, "fused_lora_dropout": False}),
    "train_2048_fast_no_dropout": ("train", 2048, {**FAST, "lora_dropout": 0.0}),  # what dropout costs
    "train_2048_fast_peft_update": ("train", 2048, {**FAST, "lora_update_in_matmul": False}),
    # Four rows a pass: the per-kernel launch cost (the CPU's, large on a virtualised GPU machine) spread
    # over twice the tokens; part of the layers recomputed to stay under 70 GB.
    "train_2048_fast_4rows_quarter": ("train", 2048, {**FAST, "gradient_checkpointing": 0.25, **ROWS_4}),
    "train_2048_fast_4rows_third": ("train", 2048, {**FAST, "gradient_checkpointing": 1 / 3, **ROWS_4}),
    # Steps 3 and 4 recorded with torch.profiler (ranker/profiling.py): time per step by kind of work.
    "train_2048_fast_profiled": ("train", 2048, {**FAST, "profile_steps": 2}),
    "train_2048_fast_quarter": ("train", 2048, {**FAST, "gradient_checkpointing": 0.25}),
    "train_2048_fast_compiled": ("train", 2048, {**FAST, "compile_layers": True}),
    "train_2048_fast_compiled_noliger": ("train", 2048, {**FAST, "compile_layers": True, "use_liger": "off"}),
    # RMSNorm outputs and the SwiGLU product kept for backward, not rebuilt (ranker/rebuilt_activations.py);
    # and what the memory rebuilding frees buys: four rows a pass, or 2 x 4096 with fewer layers recomputed.
    "train_2048_fast_kept_activations": ("train", 2048, {**FAST, "rebuild_activations": False}),
    "train_2048_fast_4rows": ("train", 2048, {**FAST, **ROWS_4}),
    "train_2048_fast_4rows_sixteenth": ("train", 2048, {**FAST, "gradient_checkpointing": 1 / 16, **ROWS_4}),
    "train_2048_fast_kept_profiled": (
        "train", 2048, {**FAST, "rebuild_activations": False, "profile_steps": 2}),
    "train_4096_fast": ("train", 4096, FAST),
    # Each pass captured once as a CUDA graph and replayed (ranker/cuda_graphs.py): the CPU's launches gone.
    "train_2048_fast_graphs": ("train", 2048, {**FAST, "cuda_graphs": True}),
    "train_2048_fast_kept_graphs": (
        "train", 2048, {**FAST, "cuda_graphs": True, "rebuild_activations": False}),
    "train_2048_fast_graphs_profiled": ("train", 2048, {**FAST, "cuda_graphs": True, "profile_steps": 2}),
    "train_4096_fast_graphs": ("train", 4096, {**FAST, "cuda_graphs": True}),
    # The frozen projections' forward and input gradient in e4m3 (ranker/fp8.py), with and without graphs.
    "train_2048_fast_fp8": ("train", 2048, {**FAST, **FP8_TRAIN}),
    "train_2048_fast_fp8_graphs": ("train", 2048, {**FAST, **FP8_TRAIN, "cuda_graphs": True}),
    "train_2048_fast_fp8_graphs_profiled": (
        "train", 2048, {**FAST, **FP8_TRAIN, "cuda_graphs": True, "profile_steps": 2}),
    "train_4096_fast_fp8_graphs": ("train", 4096, {**FAST, **FP8_TRAIN, "cuda_graphs": True}),
    "train_real_recipe_packed_fp8": ("train", "real", {**RECIPE, **STEP_16, "pack_sequences": True,
                                                       **FP8_TRAIN}),
    "train_2048_fast_fp8grad": ("train", 2048, {**FAST, **FP8_GRAD_TRAIN}),
    "train_2048_fast_fp8grad_graphs": ("train", 2048, {**FAST, **FP8_GRAD_TRAIN, "cuda_graphs": True}),
    "train_4096_fast_fp8grad_graphs": ("train", 4096, {**FAST, **FP8_GRAD_TRAIN, "cuda_graphs": True}),
    "train_real_recipe_packed_fp8grad": ("train", "real", {**RECIPE, **STEP_16, "pack_sequences": True,
                                                           **FP8_GRAD_TRAIN}),
    "train_4096_fast_80gb": ("train", 4096, {**FAST, **GPU_80GB}),
    "train_2048_fast_fp8grad_graphs_80gb": (
        "train", 2048, {**FAST, **FP8_GRAD_TRAIN, "cuda_graphs": True, **GPU_80GB}),
    # 81.1 GiB uncapped: it must run out of memory under the cap (it does, 2026-11-29), or the cap is off.
    "train_4096_fast_fp8grad_graphs_80gb": (
        "train", 4096, {**FAST, **FP8_GRAD_TRAIN, "cuda_graphs": True, **GPU_80GB}),
    "train_real_recipe_packed_80gb": ("train", "real", {**RECIPE, **STEP_16, "pack_sequences": True,
                                                        **GPU_80GB}),
    "train_4096_fast_eighth": ("train", 4096, {**FAST, "gradient_checkpointing": 0.125}),
    "train_4096_fast_quarter_kept_activations": (
        "train", 4096, {**FAST, "gradient_checkpointing": 0.25, "rebuild_activations": False}),
    "train_4096_plain": ("train", 4096, PLAIN),
    "train_4096_fast_quarter": ("train", 4096, {**FAST, "gradient_checkpointing": 0.25}),
    "train_4096_fast_half": ("train", 4096, {**FAST, "gradient_checkpointing": 0.5}),
    "train_4096_fast_most": ("train", 4096, {**FAST, "gradient_checkpointing": 0.75}),
    # Real lengths at the recipe's 16 rows a step: fixed 2-row micro-batches, or by token budget (2 x 4096,
    # the peak of two full rows); the equal-length figure beside them takes the same 16-row steps.
    "train_4096_fast_quarter_16": ("train", 4096, {**FAST, "gradient_checkpointing": 0.25, **STEP_16}),
    "train_real_plain": ("train", "real", {**PLAIN, **STEP_16}),
    "train_real_fast_quarter": ("train", "real", {**FAST, "gradient_checkpointing": 0.25, **STEP_16}),
    "train_real_fast_quarter_budget": (
        "train",
        "real",
        {**FAST, "gradient_checkpointing": 0.25, **STEP_16, "micro_batch_tokens": 8192},
    ),
    # Rows packed end to end, a swap's shared prefix computed once, no padding (ranker/packing.py).
    "train_2048_packed": ("train", 2048, PACKED),
    "train_4096_packed_quarter": ("train", 4096, {**PACKED, "gradient_checkpointing": 0.25}),
    "train_real_recipe": ("train", "real", {**RECIPE, **STEP_16}),
    "train_real_recipe_packed": ("train", "real", {**RECIPE, **STEP_16, "pack_sequences": True}),
    "train_real_recipe_packed_third": (
        "train", "real", {**RECIPE, **STEP_16, "pack_sequences": True, "gradient_checkpointing": 1 / 3}),
    "train_real_recipe_packed_quarter": (
        "train", "real", {**RECIPE, **STEP_16, "pack_sequences": True, "gradient_checkpointing": 0.25}),
    "train_real_recipe_packed_eighth": (
        "train", "real", {**RECIPE, **STEP_16, "pack_sequences": True, "gradient_checkpointing": 0.125}),
    "train_real_recipe_packed_fp8grad_quarter": ("train", "real", {
        **RECIPE, **STEP_16, "pack_sequences": True, **FP8_GRAD_TRAIN, "gradient_checkpointing": 0.25}),
    "train_real_recipe_packed_three_eighths": (
        "train", "real", {**RECIPE, **STEP_16, "pack_sequences": True, "gradient_checkpointing": 0.375}),
    "train_real_recipe_packed_fp8grad_three_eighths": ("train", "real", {
        **RECIPE, **STEP_16, "pack_sequences": True, **FP8_GRAD_TRAIN, "gradient_checkpointing": 0.375}),
    "train_real_recipe_packed_torch_dropout": (
        "train", "real", {**RECIPE, **STEP_16, "pack_sequences": True, "fused_lora_dropout": False}),
    "train_4096_fast_quarter_torch_dropout": (
        "train", 4096, {**FAST, "gradient_checkpointing": 0.25, "fused_lora_dropout": False}),
    "score_2048_plain": ("score", 2048, {"use_liger": "off"}),
    "score_2048_fast": ("score", 2048, {"use_liger": "auto"}),
    "score_2048_packed": ("score", 2048, {"use_liger": "auto", "pack_sequences": True}),
    # Passes 3 and 4 recorded with torch.profiler: time per pass by kind of work.
    "score_2048_packed_profiled": ("score", 2048, {"use_liger": "auto", "pack_sequences": True,
                                                   "profile_passes": 2}),
    # The decoder's linear layers in float8 e4m3 (ranker/fp8.py); the bench compares its logits with the
    # packed bf16 run's (the same random weights: random_init is seeded). Random weights do not keep their
    # winners under fp8 as a trained model does, so the scorer's own check only reports here (no minimum).
    "score_2048_packed_fp8": ("score", 2048, FP8),
    "score_2048_packed_fp8_profiled": ("score", 2048, {**FP8, "profile_passes": 2}),
    "score_real_packed_fp8": ("score", "real", FP8),
    "score_real_plain": ("score", "real", {"use_liger": "off"}),
    "score_real_fast": ("score", "real", {"use_liger": "auto"}),
    "score_real_packed": ("score", "real", {"use_liger": "auto", "pack_sequences": True}),
}


def dense_bf16_tflops() -> float:
    """Measured dense bf16 matmul rate (8192^3 on random data, median of 20)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return _tflops(lambda: a @ b, 8192)


def dense_fp8_tflops() -> float:
    """Measured dense e4m3 matmul rate (8192^3, row-wise scales, bf16 out, as ranker/fp8.py runs it)."""
    a = torch.randn(8192, 8192, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(8192, 8192, device="cuda").to(torch.float8_e4m3fn)
    scale_a, scale_b = torch.ones(8192, 1, device="cuda"), torch.ones(1, 8192, device="cuda")
    return _tflops(
        lambda: torch._scaled_mm(a, b.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16), 8192
    )


def _tflops(matmul: Any, size: int) -> float:
    """TFLOP/s of a size^3 matmul: three runs to warm up, then the median of 20 timed ones."""
    for _ in range(3):
        matmul()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        matmul()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * size**3 / float(np.median(times)) / 1e12


def logits_agreement(reference: dict, other: dict) -> dict:
    """How two scoring runs of the same rows (the same random weights) agree, both orders: the share of
    rows with the same winner and the correlation of the A-B margins (ranker/fp8.py's margin_agreement)."""
    from arena_assets.ranker.fp8 import margin_agreement

    logits = []
    for run in (reference, other):
        frame = pd.read_parquet(Path(run["output_dir"]) / "logits.parquet")
        shown = frame[["a_logit", "b_logit"]].to_numpy()
        swapped = frame[["a_logit_swapped", "b_logit_swapped"]].to_numpy()
        logits.append(np.concatenate([shown, swapped]))
    return margin_agreement(*logits)


def write_14b_dir(work: Path, tokenizer_dir: Path = TINY, name: str = "qwen14b-shape") -> Path:
    """config.json of the 14B shape plus a tokenizer's files (the tiny model's by default)."""
    from transformers import AutoTokenizer, Qwen2Config

    directory = work / name
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    Qwen2Config(
        **QWEN14B_SHAPE,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def long_pairs(work: Path, rows: int, *, swaps: bool) -> Path:
    """Pairs long enough that every judge prompt fills max_length (middle cut applies)."""
    rng = np.random.default_rng(0)
    words = np.array(
        [
            "the",
            "model",
            "answers",
            "questions",
            "about",
            "science",
            "history",
            "code",
            "travel",
            "food",
            "music",
            "sport",
        ]
    )
    text = lambda n: " ".join(rng.choice(words, n))  # noqa: E731
    frame = pd.DataFrame(
        {
            "id": [str(i) for i in range(rows)],
            "source": "bench",
            "prompt": [text(800) for _ in range(rows)],
            "response_a": [text(3000) for _ in range(rows)],
            "response_b": [text(3000) for _ in range(rows)],
            "winner": rng.choice(["model_a", "model_b"], rows),
            "model_a": "x",
            "model_b": "y",
            "language": "English",
        }
    )
    return write_pairs(frame, work / f"long_{rows}_{int(swaps)}.parquet", swaps=swaps)


def real_pairs(work: Path, e2e: Path, rows: int, *, swaps: bool) -> Path:
    """The first `rows` WSDM-like train rows of a `gpu_e2e.py data` directory (real length distribution)."""
    frame = pd.read_parquet(e2e / "raw" / "wsdm" / "train.parquet").head(rows)
    frame = frame.assign(id=frame["id"].astype(str), source="bench")
    return write_pairs(frame, work / f"real_{rows}_{int(swaps)}.parquet", swaps=swaps)


def write_pairs(frame: pd.DataFrame, path: Path, *, swaps: bool) -> Path:
    """Write the rows, each followed by its A/B swap when `swaps` (what the trainer reads)."""
    if swaps:
        from arena_assets.ranker.data import interleave_swaps

        frame = interleave_swaps(frame.assign(pair_id=frame["id"]))
    frame.to_parquet(path, index=False)
    return path


def random_checkpoint(work: Path, shape_dir: Path) -> Path:
    """The 14B shape with random bf16 weights saved once, so that runs in other precisions start from the
    same numbers (`random_init` draws them in the run's own dtype)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory = work / "qwen14b-random"
    if (directory / "config.json").is_file():
        return directory
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_dir), dtype=torch.bfloat16)
    model.save_pretrained(directory.with_suffix(".tmp"), max_shard_size="5GB")
    AutoTokenizer.from_pretrained(shape_dir).save_pretrained(directory.with_suffix(".tmp"))
    del model
    torch.cuda.empty_cache()
    directory.with_suffix(".tmp").rename(directory)
    return directory


LOSS_RUNS = {
    "plain": PLAIN,
    "fast": {**PACKED, "use_liger": "off"},
    # Recompute replays the same operations (exact, CPU tests); fp32 with the straightforward recipe's full
    # recompute fits one GPU (a quarter recomputed did not: 139 GiB).
    "fp32": {**PLAIN, "precision": "fp32"},
    # Not part of the pass/fail check: how far e4m3's frozen matmuls move the fast path's curve.
    "fast_fp8": {**PACKED, "use_liger": "off", **FP8_TRAIN},
    "fast_fp8grad": {**PACKED, "use_liger": "off", **FP8_GRAD_TRAIN},
}
LOSS_CHECKED = ("fp32", "plain", "fast")  # the pass/fail check's curves; the fp8 ones are compared beside


def loss_curve(work: Path, backbone: Path, data: Path, name: str, *, steps: int) -> dict:
    """One of the loss check's runs (LOSS_RUNS) over `steps` steps of one swap pair at the recipe's
    learning rates; an earlier call's finished curve in --work is reused, and an unfinished one (a call's
    time limit cut it) resumes from its last checkpoint, random state and curve included, so the fp32
    reference, longer than one call on one GPU, can span two calls on a warm machine."""
    config = {"backbone": str(backbone), "output_dir": str(work / f"loss_{name}"), "train_path": str(data),
              "max_length": 2048, "per_device_batch_size": 2, "global_batch_size": 2, "max_steps": steps,
              "resume": True, "checkpoint_every_minutes": 2.0, "precision": "bf16", "log_every_steps": 10,
              **LOSS_RUNS[name]}  # fmt: skip
    finished = work / f"loss_{name}" / "metrics.json"
    if finished.is_file():
        return json.loads(finished.read_text())
    return run_entry("arena_assets.ranker.trainer", config, work, f"loss_{name}", keep_curve=True)


def compare_loss_curves(runs: dict[str, dict], steps: int) -> dict:
    """The straightforward and the fast trainer (packed rows), each beside the straightforward recipe in
    fp32 from the same bf16 weights (`random_checkpoint`), over the steps every curve has (`steps` where
    each ran whole; fewer where a curve came back cut, `benchmarks/loss_check.py`).

    bf16 cannot be held to a fixed tolerance here: on random 14B weights the loss of one pair swings from
    0.07 to 2.7 between steps, and rounding differences grow over the updates. So the fp32 run is the
    reference, and the fast path passes when it strays from it at most LOSS_CURVE_SLACK times as far as the
    straightforward bf16 recipe does. The elementwise kernels are held equal (liger off): swapping them
    alone moved the first step's loss by 0.1 on these weights; liger's own numerics are checked on
    the tiny model (`test_liger_kernels_keep_loss_and_grads`, on a GPU)."""
    failed = {name: run for name, run in runs.items() if "error" in run}
    if failed:
        return failed
    curves = {name: np.array([loss for _, loss in run["train_loss_curve"]]) for name, run in runs.items()}
    steps = min(steps, *(len(curve) for curve in curves.values()))
    curves = {name: curve[:steps] for name, curve in curves.items()}
    off = {k: np.abs(curves[k] - curves["fp32"]) for k in curves if k != "fp32"}
    summary = {f"{k}_vs_fp32_{s}": float(getattr(v, s)()) for k, v in off.items() for s in ("mean", "max")}

    def within(name: str) -> bool:
        return all(summary[f"{name}_vs_fp32_{s}"] <= LOSS_CURVE_SLACK * summary[f"plain_vs_fp32_{s}"]
                   for s in ("mean", "max"))  # fmt: skip

    return {**{f"curve_{k}": v.tolist() for k, v in curves.items()}, "steps": steps, **summary,
            "max_abs_diff": float(np.abs(curves["plain"] - curves["fast"]).max()),
            "slack": LOSS_CURVE_SLACK, "within_tolerance": within("fast"),
            **{f"{k}_within_tolerance": within(k) for k in curves if k not in LOSS_CHECKED},
            "walls": {k: run.get("wall") for k, run in runs.items()}}  # fmt: skip


class GpuSlots:
    """Child processes run one per visible GPU at a time: `run_entry` pins a job to the GPU its thread
    holds, so on a machine of several GPUs the variants (and the loss check's curves) run side by side."""

    def __init__(self) -> None:
        self.free: queue.Queue[int] = queue.Queue()
        self.held = threading.local()
        self.count = 0

    def open(self, count: int) -> None:
        for index in range(self.count, self.count + count):
            self.free.put(index)
        self.count += count

    def run(self, job: Any, *args: Any, **kwargs: Any) -> Any:
        index = self.free.get()
        self.held.gpu = index
        try:
            return job(*args, **kwargs)
        finally:
            self.held.gpu = None
            self.free.put(index)

    def env(self) -> dict[str, str]:
        """The child's CUDA_VISIBLE_DEVICES: the held GPU among those this process sees (a bench run with
        CUDA_VISIBLE_DEVICES=1 runs its children on GPU 1, not on the host's first)."""
        gpu = getattr(self.held, "gpu", None)
        if gpu is None:
            return {}
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return {"CUDA_VISIBLE_DEVICES": visible[gpu] if visible else str(gpu)}


SLOTS = GpuSlots()


def run_entry(
    module: str, config: dict, work: Path, name: str, *, keep_curve: bool = False, memory_gib: float = 0.0
) -> dict:
    """Run one entry point as a child process and return its metrics.json plus wall time; with
    `memory_gib`, torch's allocator in the child holds at most that much of the GPU (GPU_80GB)."""
    config_path = work / f"{name}.json"
    config_path.write_text(json.dumps(config))
    command = [sys.executable, "-m", module, "--config", str(config_path)]
    if memory_gib:
        command[1:3] = ["-c", "import runpy, torch; torch.cuda.set_per_process_memory_fraction("
                        f"{memory_gib} * 2**30 / torch.cuda.get_device_properties(0).total_memory); "
                        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
             **SLOTS.env()},
    )
    wall = time.perf_counter() - start
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-1500:], "wall": wall}
    metrics_dir = Path(config["output_dir"])
    metrics = json.loads((metrics_dir / "metrics.json").read_text())
    kept = {k: v for k, v in metrics.items() if keep_curve or k != "train_loss_curve"}
    # Which GPU ran it: two GPUs of one host differ by a few percent, so a comparison names its GPUs.
    gpu = SLOTS.env().get("CUDA_VISIBLE_DEVICES")
    return {**kept, "wall": wall, "gpu_index": int(gpu) if gpu and gpu.isdigit() else gpu}


def train_variant(
    work: Path, backbone: Path, data: Path, *, name: str, max_length: int, extra: dict, steps: int
) -> dict:
    """Stage-1 training for `steps` optimizer steps of one swap pair (2 rows) each; FLOPs per token
    are 6P with every layer recomputed, 4P with none."""
    config = {
        "backbone": str(backbone),
        "output_dir": str(work / f"adapter_{name}"),
        "train_path": str(data),
        "max_length": max_length,
        "per_device_batch_size": 2,
        "global_batch_size": 2,
        "max_steps": steps,
        "random_init": True,
        "resume": False,
        "precision": "bf16",  # logging every 10 steps, as the recipe: a log line waits for the GPU
        **extra,
    }
    memory_gib = config.pop("gpu_memory_gib", 0.0)
    if "profile_steps" in extra:
        config["profile_dir"] = str(work / f"profile_{name}")
    result = run_entry("arena_assets.ranker.trainer", config, work, name, memory_gib=memory_gib)
    if "profile_steps" in extra and "error" not in result:
        result["profile_top"] = top_of_profile(Path(config["profile_dir"]) / "ops.json")
    return {
        **result,
        "flops_per_token": (4.0 + 2.0 * extra["gradient_checkpointing"]) * NON_EMBEDDING_PARAMS_14B,
    }


def top_of_profile(ops_path: Path, count: int = 15) -> dict:
    """The kernels and the operators (with input shapes) that took the most device time, in ms."""
    recorded = json.loads(ops_path.read_text())
    kernels = sorted(recorded["kernels"], key=lambda k: -k["us"])[:count]
    ops = sorted(recorded["ops"], key=lambda o: -o["self_us"])[:count]
    return {
        "kernels": [[k["name"][:90], round(k["us"] / 1e3, 2), k["count"]] for k in kernels],
        "ops": [[o["name"], o["shapes"][:3], round(o["self_us"] / 1e3, 2), o["count"]] for o in ops],
    }


def score_variant(
    work: Path, model: Path, data: Path, *, name: str, max_length: int, extra: dict, random_init: bool
) -> dict:
    """Both-order scoring of every row of `data`."""
    config = {
        "model": str(model),
        "input_path": str(data),
        "output_dir": str(work / f"score_{time.time_ns()}"),
        "max_length": max_length,
        "token_budget": 8 * max_length,
        "rows_per_shard": 4096,
        "random_init": random_init,
        "precision": "bf16",
        **extra,
    }
    if "profile_passes" in extra:
        config["profile_dir"] = str(work / f"profile_{name}")
    result = run_entry("arena_assets.ranker.scorer", config, work, name)
    result["output_dir"] = config["output_dir"]  # its logits, for comparing runs (logits_agreement)
    if "profile_passes" in extra and "error" not in result:
        result["profile_top"] = top_of_profile(Path(config["profile_dir"]) / "ops.json")
    return {**result, "flops_per_token": 2.0 * NON_EMBEDDING_PARAMS_14B} if random_init else result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--loss-steps", type=int, default=50)
    parser.add_argument("--real", type=Path, default=ROOT / ".e2e", help="a `gpu_e2e.py data` directory")
    parser.add_argument("--loss-runs", default=",".join(LOSS_RUNS),
                        help="the loss check's curves to run, in this order (default: all, fp32 first)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/arena-bench"),
                        help="scratch directory; finished loss curves in it are reused (a long check split "
                             "over calls on a warm machine: /tmp lasts between a machine's calls, folders "
                             "of the tree do not)")  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    peak = dense_bf16_tflops()
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "dense_bf16_tflops": peak}
    if torch.cuda.get_device_capability() >= (8, 9):
        env["dense_fp8_tflops"] = dense_fp8_tflops()
    results: dict[str, dict] = {"env": env}
    print(json.dumps(results["env"]), flush=True)
    # Any tokenizer serves the equal-length rows: the `--real` run's when carried, else the embedded one
    # (which `arena build-demo` writes; the GPU machine's tree lacks it).
    qwen = write_14b_dir(work, args.real / "tokenizer" if (args.real / "tokenizer").is_dir() else TINY)
    long_train = long_pairs(work, 32, swaps=True)
    long_score = long_pairs(work, 64, swaps=False)

    def run(name: str) -> dict:
        if name.startswith("loss_2048:"):
            return loss_curve(work, backbone, loss_rows, name.split(":")[1], steps=args.loss_steps)
        kind, length, extra = VARIANTS[name]
        if length == "real":  # rows of the real length distribution, with the tokenizer they were made for
            if not (args.real / "tokenizer").is_dir():
                return {"error": f"no {args.real}/tokenizer: run `python benchmarks/gpu_e2e.py data --dir "
                                 ".e2e` here and carry .e2e"}  # fmt: skip
            model = write_14b_dir(work, args.real / "tokenizer", "qwen14b-shape-real")
            rows = real_pairs(work, args.real, 64 if kind == "train" else 256, swaps=kind == "train")
            length = 4096
        else:
            model, rows = qwen, long_train if kind == "train" else long_score
        if kind == "train":
            return train_variant(work, model, rows, name=name, max_length=length, extra=extra,
                                 steps=args.steps)  # fmt: skip
        return score_variant(work, model, rows, name=name, max_length=length, extra=extra, random_init=True)

    chosen = [v for v in args.only.split(",") if v] or [*VARIANTS, "loss_2048"]
    unknown = sorted(set(chosen) - {*VARIANTS, "loss_2048"})
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {[*VARIANTS, 'loss_2048']}")
    jobs = [v for v in chosen if v != "loss_2048"]
    if "loss_2048" in chosen:
        backbone = random_checkpoint(work, qwen)  # before the jobs: every curve starts from it
        loss_rows = long_pairs(work, 100, swaps=True)
        torch.cuda.empty_cache()
        loss_runs = [k for k in args.loss_runs.split(",") if k]
        if unknown_runs := sorted(set(loss_runs) - set(LOSS_RUNS)):
            parser.error(f"unknown loss runs {unknown_runs}; known: {list(LOSS_RUNS)}")
        jobs = [*(f"loss_2048:{k}" for k in loss_runs), *jobs]
    SLOTS.open(torch.cuda.device_count())
    print(f"{len(jobs)} jobs on {SLOTS.count} GPU(s)", flush=True)
    with ThreadPoolExecutor(max_workers=SLOTS.count) as pool:
        futures = {job: pool.submit(SLOTS.run, run, job) for job in jobs}
        for job, future in futures.items():
            finished = future.result()
            print(f"== {job}\n{json.dumps(finished)[:600]}", flush=True)
            if job.startswith("loss_2048:"):  # every curve whole, for a check split over calls
                results.setdefault("loss_2048_curves", {})[job.split(":")[1]] = finished
            else:
                results[job] = finished
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    if "loss_2048" in chosen and set(LOSS_CHECKED) <= set(loss_runs):
        results["loss_2048"] = compare_loss_curves({k: futures[f"loss_2048:{k}"].result() for k in loss_runs},
                                                   args.loss_steps)  # fmt: skip
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    # Logits against the packed bf16 run's where both ran: fp8's, and the plain recipe's (bf16 both, padded
    # against packed: the control that the two processes built the same random weights).
    for length in ("2048", "real"):
        for other in ("packed_fp8", "plain"):
            pair = results.get(f"score_{length}_packed"), results.get(f"score_{length}_{other}")
            if pair[0] and pair[1] and "error" not in pair[0] and "error" not in pair[1]:
                pair[1]["against_packed_bf16"] = logits_agreement(*pair)
                print(f"score_{length}_{other} against packed bf16: {pair[1]['against_packed_bf16']}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    # One file for every run's log tail: the device tool brings back at most 8 files.
    tails = [f"===== {log.stem}\n{log.read_text()[-8000:]}" for log in sorted(work.glob("*.log"))]
    (args.out / "logs.txt").write_text("\n".join(tails))
    print_table(results, chosen, peak)


def print_table(results: dict, chosen: list[str], peak: float) -> None:
    """tokens/s, share of dense bf16, peak memory, padding and the ratio to the straightforward recipe."""
    width = max(len(name) for name in [*chosen, "variant"]) + 2
    print(f"\n{'variant':<{width}}{'tokens/s':>10}{'share':>7}{'peak GB':>9}{'padding':>9}{'vs plain':>10}")
    for name in chosen:
        if name not in results:  # a loss check split over calls: its curves are in results.json
            continue
        r = results[name]
        if "error" in r:
            print(f"{name:<{width}} ERROR {r['error'][-200:]!r}")
            continue
        if name == "loss_2048" and "steps" not in r:  # a curve failed; the others are in results.json
            print(f"{name:<{width}} ERROR " + " ".join(f"{k}: {v['error'][-150:]!r}" for k, v in r.items()
                                                        if isinstance(v, dict)))  # fmt: skip
            continue
        if name == "loss_2048":
            print(f"{name:<{width}} {r['steps']} steps from fp32: plain mean {r['plain_vs_fp32_mean']:.4f} "
                  f"max {r['plain_vs_fp32_max']:.4f}, fast mean {r['fast_vs_fp32_mean']:.4f} max "
                  f"{r['fast_vs_fp32_max']:.4f} (slack {r['slack']}x): "
                  f"{'within' if r['within_tolerance'] else 'OUTSIDE'}")  # fmt: skip
            continue
        rate = r.get("train_tokens_per_second") or r.get("scoring_tokens_per_second") or 0.0
        share = f"{rate * r['flops_per_token'] / (peak * 1e12):.2f}" if "flops_per_token" in r else ""
        kind, length = name.split("_")[:2]
        base = results.get(f"{kind}_{length}_plain") or results.get(f"{kind}_2048_plain") or {}
        base_rate = base.get("train_tokens_per_second") or base.get("scoring_tokens_per_second")
        profiled = {"profile_steps", "profile_passes"} & set(VARIANTS.get(name, ("", 0, {}))[2])
        ratio = "profiled" if profiled else (
            f"{rate / base_rate:.2f}x" if base_rate else "")  # a profiled rate pays the profiler's cost
        print(f"{name:<{width}}{rate:>10.0f}{share:>7}{r.get('peak_memory_gb', 0):>9.1f}"
              f"{r.get('padding_fraction', 0.0):>9.3f}{ratio:>10}")  # fmt: skip
    for name in chosen:  # where a profiled step's time went (its rate above includes the profiler's cost)
        r = results.get(name, {})
        unit = "pass" if name.startswith("score") else "step"
        by_kind = {k.removeprefix("profile_").removesuffix(f"_ms_per_{unit}"): v for k, v in r.items()
                   if k.startswith("profile_") and k.endswith(f"_ms_per_{unit}")}  # fmt: skip
        if by_kind:
            total = sum(by_kind.values())
            print(f"\n{name}: {total:.1f} ms of device time a {unit}: " + ", ".join(
                f"{k} {v:.1f} ({v / total:.0%})" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])))
            for kernel, ms, count in r["profile_top"]["kernels"][:10]:
                print(f"  {ms:>9.1f} ms {count:>6}x  {kernel}")


if __name__ == "__main__":
    main()
