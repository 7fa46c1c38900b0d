"""The variants `gpu_bench.py` times and the loss check's curves: each one's overrides of the entry points'
defaults, and the configs the bench hands them (`train_config`, `score_config`, `loss_config`). Plain data
and pure functions, so a CPU test builds every variant's config the way the trainer and the scorer will
read it, before a GPU call spends time on one they would refuse.
"""

from __future__ import annotations

import time
from pathlib import Path

# The straightforward recipe (peft's fp32 adapters, every layer recomputed, no liger) against the fast paths.
PLAIN = {
    "adapter_compute_dtype": False,
    "gradient_checkpointing": 1.0,
    "use_liger": "off",
    "recompute_lora_dropout": False,
    "lora_update_in_matmul": False,
    "head_rows_only": False,
}
FAST = {"adapter_compute_dtype": True, "gradient_checkpointing": 0.0, "use_liger": "auto"}
PACKED = {**FAST, "pack_sequences": True}
# The qwen14b recipe's memory settings (configs/qwen14b): 2 x 4096-token passes, no layer recomputed (18 of
# 48 before 2026-11-29: the `_three_eighths` variants).
RECIPE = {**FAST, "gradient_checkpointing": 0.0, "micro_batch_tokens": 8192}
# The loss check's tolerance, relative to the straightforward bf16 recipe's own distance from fp32: the fast
# path may stray from the fp32 curve at most this many times as far (per-step mean and largest difference).
LOSS_CURVE_SLACK = 1.5

# The plain merged-model baseline: padded rows, no liger, every layer at every position, the residual added
# after the matmuls as the model's own layers do.
SCORE_PLAIN = {"use_liger": "off", "head_rows_only": False, "residual_in_matmul": False}
# The scorer's packed bf16 path: both orders of a pair in one pass, liger's kernels where installed.
SCORE_PACKED = {"use_liger": "auto", "pack_sequences": True}
FP8 = {**SCORE_PACKED, "fp8_matmuls": True, "fp8_min_same_winner": 0.0}
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
    # The last layer at every position (before ranker/head_rows.py): what computing only the read rows saves.
    "train_2048_fast_all_rows": ("train", 2048, {**FAST, "head_rows_only": False}),
    "train_2048_fast_fp8grad_graphs_all_rows": (
        "train", 2048, {**FAST, **FP8_GRAD_TRAIN, "cuda_graphs": True, "head_rows_only": False}),
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
    "train_2048_fast_fp8grad_graphs_profiled": (
        "train", 2048, {**FAST, **FP8_GRAD_TRAIN, "cuda_graphs": True, "profile_steps": 2}),
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
    "score_2048_plain": ("score", 2048, SCORE_PLAIN),
    "score_2048_fast": ("score", 2048, {"use_liger": "auto"}),
    "score_2048_packed": ("score", 2048, SCORE_PACKED),
    # Passes 3 and 4 recorded with torch.profiler: time per pass by kind of work.
    "score_2048_packed_profiled": ("score", 2048, {**SCORE_PACKED, "profile_passes": 2}),
    # The decoder's linear layers in float8 e4m3 (ranker/fp8.py); the bench compares its logits with the
    # packed bf16 run's (the same random weights: random_init is seeded). Random weights do not keep their
    # winners under fp8 as a trained model does, so the scorer's own check only reports here (no minimum).
    "score_2048_packed_fp8": ("score", 2048, FP8),
    "score_2048_packed_fp8_profiled": ("score", 2048, {**FP8, "profile_passes": 2}),
    "score_real_packed_fp8": ("score", "real", FP8),
    "score_real_plain": ("score", "real", SCORE_PLAIN),
    "score_real_fast": ("score", "real", {"use_liger": "auto"}),
    "score_real_packed": ("score", "real", SCORE_PACKED),
    "score_real_packed_profiled": ("score", "real", {**SCORE_PACKED, "profile_passes": 2}),
    # The residual added by its own kernel after each output matmul, as the scorer did until 2026-11-29.
    "score_real_packed_add_after": ("score", "real", {**SCORE_PACKED, "residual_in_matmul": False}),
    "score_real_packed_add_after_profiled": ("score", "real", {**SCORE_PACKED, "residual_in_matmul": False,
                                                               "profile_passes": 2}),
    # The qwen14b recipe's scoring budget (ScoreConfig's default, 16,384 row tokens a pass) against the
    # bench's 8 x max_length.
    "score_real_packed_16k": ("score", "real", {**SCORE_PACKED, "token_budget": 16384}),
    # Attention through SDPA on each row gathered whole (cuDNN's kernel on Hopper), the batch's width the
    # longest row rounded up to 64, 128 or 256 so that cuDNN's plans, built once a shape, repeat.
    "score_real_packed_rows64": ("score", "real", {**SCORE_PACKED, "sdpa_row_multiple": 64}),
    "score_real_packed_rows128": ("score", "real", {**SCORE_PACKED, "sdpa_row_multiple": 128}),
    "score_real_packed_rows256": ("score", "real", {**SCORE_PACKED, "sdpa_row_multiple": 256}),
    "score_real_packed_rows128_profiled": ("score", "real", {**SCORE_PACKED,
                                                             "sdpa_row_multiple": 128, "profile_passes": 2}),
    "score_real_packed_fp8_rows128": ("score", "real", {**FP8, "sdpa_row_multiple": 128}),
    "score_real_packed_fp8_rows256": ("score", "real", {**FP8, "sdpa_row_multiple": 256}),
    "score_real_packed_64k": ("score", "real", {**SCORE_PACKED, "token_budget": 65536}),
    "score_real_packed_128k": ("score", "real", {**SCORE_PACKED, "token_budget": 131072}),
    # The predictor (`arena predict`: every row in its order, then all of them swapped, tta_share 1) on the
    # same pairs: as it ran until 2026-11-29 (padded, no liger, the residual added after), its defaults now,
    # and the qwen14b recipe's predict.yaml (rows packed).
    "predict_real_plain": ("predict", "real", {"use_liger": "off", "residual_in_matmul": False}),
    "predict_real_padded": ("predict", "real", {}),
    "predict_real_packed": ("predict", "real", {"pack_sequences": True}),
    "score_2048_packed_all_rows": ("score", 2048, {**SCORE_PACKED, "head_rows_only": False}),
    "score_real_packed_all_rows": ("score", "real", {**SCORE_PACKED, "head_rows_only": False}),
}

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



def train_config(
    work: Path, backbone: Path, data: Path, *, name: str, max_length: int, extra: dict, steps: int
) -> dict:
    """The trainer's config of a training variant: `steps` optimizer steps of one swap pair (2 rows) each
    unless `extra` says otherwise, random weights. `gpu_memory_gib` (GPU_80GB) is the bench's, not the
    trainer's: it stays out."""
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
        **{k: v for k, v in extra.items() if k != "gpu_memory_gib"},
    }
    if "profile_steps" in extra:
        config["profile_dir"] = str(work / f"profile_{name}")
    return config


def score_config(
    work: Path, model: Path, data: Path, *, name: str, max_length: int, extra: dict, random_init: bool
) -> dict:
    """The scorer's config of a scoring variant: both orders of every row of `data`."""
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
    return config


def predict_config(work: Path, model: Path, data: Path, *, max_length: int, extra: dict) -> dict:
    """The predictor's config of a prediction variant: every row of `data`, both orders, random weights."""
    run = work / f"predict_{time.time_ns()}"
    return {
        "model": str(model),
        "random_init": True,
        "input_path": str(data),
        "output_path": str(run / "predictions.csv"),
        "metrics_path": str(run / "metrics.json"),
        "max_length": max_length,
        "token_budget": 8 * max_length,
        "precision": "bf16",
        "tta_share": 1.0,
        **extra,
    }


def loss_config(work: Path, backbone: Path, data: Path, name: str, *, steps: int) -> dict:
    """The trainer's config of one of the loss check's runs (LOSS_RUNS): `steps` steps of one swap pair at
    the recipe's learning rates from `backbone`'s weights, checkpointed every 2 minutes so that a run a
    call's time limit cut resumes in the next call."""
    return {"backbone": str(backbone), "output_dir": str(work / f"loss_{name}"), "train_path": str(data),
            "max_length": 2048, "per_device_batch_size": 2, "global_batch_size": 2, "max_steps": steps,
            "resume": True, "checkpoint_every_minutes": 2.0, "precision": "bf16", "log_every_steps": 10,
            **LOSS_RUNS[name]}  # fmt: skip
