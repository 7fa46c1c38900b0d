"""Time the ranker's trainer and scorer on one GPU: the tiny model, and the Qwen2.5-14B shape.

    PYTHONPATH=. python benchmarks/gpu_bench.py --out $OUT [--only tiny,train_2048,...]

Every variant runs the real entry points (`python -m arena_assets.ranker.trainer|scorer --config F`) as
child processes, so what is timed is what the assets run. Prints one table at the end and writes
`results.json` under --out. The 14B shape is a config.json plus the tiny tokenizer; the
trainer and scorer build it with random weights on the GPU (`random_init`), so no download is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "embedded" / "tiny-qwen2"
HARD = ROOT / "data" / "artifacts" / "hard_label_set"
OPEN = ROOT / "data" / "artifacts" / "open_model_pairs" / "rows.parquet"
TINY_MERGED = ROOT / "data" / "artifacts" / "merged_stage1_model" / "model"
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
PLAIN = {"adapter_compute_dtype": False, "gradient_checkpointing": 1.0, "use_liger": "off"}
FAST = {"adapter_compute_dtype": True, "gradient_checkpointing": 0.0, "use_liger": "auto"}


def dense_bf16_tflops() -> float:
    """Measured dense bf16 matmul rate (8192^3 on random data, median of 20)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / float(np.median(times)) / 1e12


def write_14b_dir(work: Path) -> Path:
    """config.json of the 14B shape plus the tiny tokenizer's files."""
    from transformers import AutoTokenizer, Qwen2Config

    directory = work / "qwen14b-shape"
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(TINY)
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
    if swaps:
        from arena_assets.ranker.data import interleave_swaps

        frame = interleave_swaps(frame.assign(pair_id=frame["id"]))
    path = work / f"long_{rows}_{int(swaps)}.parquet"
    frame.to_parquet(path, index=False)
    return path


def run_entry(module: str, config: dict, work: Path, name: str) -> dict:
    """Run one entry point as a child process and return its metrics.json plus wall time."""
    config_path = work / f"{name}.json"
    config_path.write_text(json.dumps(config))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", module, "--config", str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    wall = time.perf_counter() - start
    (work / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-1500:], "wall": wall}
    metrics_dir = Path(config["output_dir"])
    metrics = json.loads((metrics_dir / "metrics.json").read_text())
    return {**{k: v for k, v in metrics.items() if k != "train_loss_curve"}, "wall": wall}


def train_variant(
    work: Path, backbone: Path, data: Path, *, max_length: int, extra: dict, steps: int
) -> dict:
    """Stage-1 training for `steps` optimizer steps of one swap pair (2 rows) each; FLOPs per token
    are 6P with every layer recomputed, 4P with none."""
    config = {
        "backbone": str(backbone),
        "output_dir": str(work / "adapter"),
        "train_path": str(data),
        "max_length": max_length,
        "per_device_batch_size": 2,
        "global_batch_size": 2,
        "max_steps": steps,
        "random_init": True,
        "resume": False,
        "precision": "bf16",
        "log_every_steps": 1,
        **extra,
    }
    result = run_entry("arena_assets.ranker.trainer", config, work, f"train_{max_length}_{len(extra)}")
    return {
        **result,
        "flops_per_token": (4.0 + 2.0 * extra["gradient_checkpointing"]) * NON_EMBEDDING_PARAMS_14B,
    }


def score_variant(
    work: Path, model: Path, data: Path, *, max_length: int, extra: dict, random_init: bool
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
    result = run_entry("arena_assets.ranker.scorer", config, work, "score")
    return {**result, "flops_per_token": 2.0 * NON_EMBEDDING_PARAMS_14B} if random_init else result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/arena-bench")
    work.mkdir(parents=True, exist_ok=True)
    peak = dense_bf16_tflops()
    results: dict[str, dict] = {
        "env": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "dense_bf16_tflops": peak}
    }
    print(json.dumps(results["env"]), flush=True)
    qwen = write_14b_dir(work)
    long_train = long_pairs(work, 32, swaps=True)
    long_score = long_pairs(work, 64, swaps=False)

    variants = {
        "tiny_train": lambda: run_entry(
            "arena_assets.ranker.trainer",
            {
                "backbone": str(TINY),
                "output_dir": str(work / "tiny_adapter"),
                "train_path": str(HARD / "train.parquet"),
                "validation_path": str(HARD / "validation.parquet"),
                "max_length": 384,
                "per_device_batch_size": 16,
                "global_batch_size": 16,
                "lora_r": 16,
                "lora_alpha": 32,
                "lr_lora_a": 2e-3,
                "lr_lora_b": 4e-3,
                "epochs": 2,
                "gradient_checkpointing": 1.0,
                "precision": "bf16",
                "resume": False,
            },
            work,
            "tiny_train",
        ),
        "tiny_score": lambda: score_variant(
            work, TINY_MERGED, OPEN, max_length=384, extra={}, random_init=False
        ),
        "train_2048_plain": lambda: train_variant(
            work, qwen, long_train, max_length=2048, extra=PLAIN, steps=args.steps
        ),
        "train_2048_bf16_adapters": lambda: train_variant(
            work,
            qwen,
            long_train,
            max_length=2048,
            extra={**PLAIN, "adapter_compute_dtype": True},
            steps=args.steps,
        ),
        "train_2048_fast": lambda: train_variant(
            work, qwen, long_train, max_length=2048, extra=FAST, steps=args.steps
        ),
        "train_2048_fast_half": lambda: train_variant(
            work,
            qwen,
            long_train,
            max_length=2048,
            extra={**FAST, "gradient_checkpointing": 0.5},
            steps=args.steps,
        ),
        "train_4096_plain": lambda: train_variant(
            work, qwen, long_train, max_length=4096, extra=PLAIN, steps=args.steps
        ),
        "train_4096_fast_half": lambda: train_variant(
            work,
            qwen,
            long_train,
            max_length=4096,
            extra={**FAST, "gradient_checkpointing": 0.5},
            steps=args.steps,
        ),
        "train_4096_fast_most": lambda: train_variant(
            work,
            qwen,
            long_train,
            max_length=4096,
            extra={**FAST, "gradient_checkpointing": 0.75},
            steps=args.steps,
        ),
        "train_4096_fast_full": lambda: train_variant(
            work,
            qwen,
            long_train,
            max_length=4096,
            extra={**FAST, "gradient_checkpointing": 1.0},
            steps=args.steps,
        ),
        "score_2048_plain": lambda: score_variant(
            work, qwen, long_score, max_length=2048, extra={"use_liger": "off"}, random_init=True
        ),
        "score_2048_fast": lambda: score_variant(
            work, qwen, long_score, max_length=2048, extra={"use_liger": "auto"}, random_init=True
        ),
    }
    chosen = [v for v in args.only.split(",") if v] or list(variants)
    for name in chosen:
        print(f"== {name}", flush=True)
        results[name] = variants[name]()
        print(json.dumps(results[name])[:600], flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for log in work.glob("*.log"):
        (args.out / "logs").mkdir(exist_ok=True)
        (args.out / "logs" / log.name).write_text(log.read_text()[-20000:])

    print(f"\n{'variant':<20}{'tokens/s':>11}{'share':>8}{'peak GB':>9}{'val acc':>9}{'wall s':>8}")
    for name in chosen:
        r = results[name]
        if "error" in r:
            print(f"{name:<20} ERROR {r['error'][-200:]!r}")
            continue
        rate = r.get("train_tokens_per_second") or r.get("scoring_tokens_per_second") or 0.0
        share = f"{rate * r['flops_per_token'] / (peak * 1e12):.2f}" if "flops_per_token" in r else ""
        print(
            f"{name:<20}{rate:>11.0f}{share:>8}{r.get('peak_memory_gb', 0):>9.1f}"
            f"{r.get('val_accuracy', float('nan')):>9.3f}{r['wall']:>8.0f}"
        )


if __name__ == "__main__":
    main()
