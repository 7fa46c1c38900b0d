"""Time the ranker's trainer, scorer and predictor on a GPU: the straightforward recipe beside the fast paths.

    PYTHONPATH=. python benchmarks/gpu_bench.py --out $OUT [--only train_2048_plain,...] [--real .e2e]

Every variant runs the real entry points (`python -m arena_assets.ranker.trainer|scorer --config F`) as
child processes, so what is timed is what the assets run. Prints one table at the end (tokens/s, share of
the measured dense bf16 rate and of the rate it holds for seconds, peak memory, padding, against the
straightforward recipe) and writes
`results.json` under --out: `env.dense_bf16_tflops` (the share's denominator; `sustained_bf16_tflops` beside
it: the same matmul held for seconds, as a run's minutes of matmuls meet the GPU), then one key per variant
(`train_2048_plain`, `train_2048_*`, `train_4096_*`, `train_real_*`, `score_2048_*`, `score_real_*`,
`predict_real_*`; bench_variants.VARIANTS) holding the entry point's metrics (`train_tokens_per_second` or
`scoring_tokens_per_second`, `peak_memory_gb`, `padding_fraction`), and `loss_2048`: the straightforward
and the fast (packed) trainer over the same 50 steps, each against the straightforward recipe in fp32 from
the same weights. On an H200 a 2-row variant takes about 25 s, a 16-row one 60-90 s, the bf16 loss curves
1-1.5 min each and the fp32 one about 7 min; --only picks the variants of one run, --loss-runs the loss
check's curves (`benchmarks/loss_check.py` compares curves from several calls). With several GPUs visible,
the variants and the loss check's three curves run side by side, one child process per GPU (each variant
still on one GPU). `*_profiled` variants record two steps with torch.profiler and print where the device
time went; `*_80gb` variants cap torch's allocator at what an 80 GB GPU leaves a process
(bench_variants.GPU_80GB). A variant named twice in --only runs twice: the later run's figures are its
own, the earlier ones go under `earlier_runs` in results.json. The first run on a fresh machine pays
Triton's compilation (11-14% slow), so name the first variant again.
`--score-rows N` scores N WSDM-like pairs instead of 256 in the `score_real_*` variants. The `predict_real_*`
variants run `python -m arena_assets.ranker.predict` on the same pairs, every row in both orders
(`tokens_per_second` counts both).

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
from bench_variants import (
    LOSS_CHECKED,
    LOSS_RUNS,
    VARIANTS,
    loss_config,
    predict_config,
    score_config,
    train_config,
)
from loss_check import compare_loss_curves

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


def dense_bf16_tflops() -> float:
    """Measured dense bf16 matmul rate (8192^3 on random data, median of 20)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return _tflops(lambda: a @ b, 8192)


def sustained_bf16_tflops(burst_tflops: float, seconds: float = 5.0) -> float:
    """The same matmul back to back for `seconds` (counted at `dense_bf16_tflops`'s burst rate), timed over
    the last half: the rate a GPU holds once its power and clocks settle, as a scoring run's minutes of
    matmuls meet it (the 20 timed runs of the burst rate take about 30 ms)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    runs = max(1, int(seconds / 2 / (2 * 8192**3 / (burst_tflops * 1e12))))
    for _ in range(runs):  # the first half: warm up to the settled clocks
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * 8192**3 * runs / (start.elapsed_time(end) / 1e3) / 1e12


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


def loss_curve(work: Path, backbone: Path, data: Path, name: str, *, steps: int) -> dict:
    """One of the loss check's runs (LOSS_RUNS) over `steps` steps of one swap pair; an earlier call's
    finished curve in --work is reused, and an unfinished one (a call's time limit cut it) resumes from its
    last checkpoint, random state and curve included, so a check longer than one call can span two calls on
    a warm machine."""
    finished = work / f"loss_{name}" / "metrics.json"
    if finished.is_file():
        return json.loads(finished.read_text())
    config = loss_config(work, backbone, data, name, steps=steps)
    return run_entry("arena_assets.ranker.trainer", config, work, f"loss_{name}", keep_curve=True)


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
    metrics_path = Path(config.get("metrics_path") or Path(config["output_dir"]) / "metrics.json")
    metrics = json.loads(metrics_path.read_text())
    kept = {k: v for k, v in metrics.items() if keep_curve or k != "train_loss_curve"}
    # Which GPU ran it: two GPUs of one host differ by a few percent, so a comparison names its GPUs.
    gpu = SLOTS.env().get("CUDA_VISIBLE_DEVICES")
    return {**kept, "wall": wall, "gpu_index": int(gpu) if gpu and gpu.isdigit() else gpu}


def train_variant(
    work: Path, backbone: Path, data: Path, *, name: str, max_length: int, extra: dict, steps: int
) -> dict:
    """Stage-1 training (`train_config`); FLOPs per token are 6P with every layer recomputed, 4P with
    none."""
    config = train_config(work, backbone, data, name=name, max_length=max_length, extra=extra, steps=steps)
    result = run_entry("arena_assets.ranker.trainer", config, work, name,
                       memory_gib=extra.get("gpu_memory_gib", 0.0))  # fmt: skip
    if "profile_dir" in config and "error" not in result:
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
    """Both-order scoring of every row of `data` (`score_config`)."""
    config = score_config(work, model, data, name=name, max_length=max_length, extra=extra,
                          random_init=random_init)  # fmt: skip
    result = run_entry("arena_assets.ranker.scorer", config, work, name)
    result["output_dir"] = config["output_dir"]  # its logits, for comparing runs (logits_agreement)
    if "profile_dir" in config and "error" not in result:
        result["profile_top"] = top_of_profile(Path(config["profile_dir"]) / "ops.json")
    return {**result, "flops_per_token": 2.0 * NON_EMBEDDING_PARAMS_14B} if random_init else result


def predict_variant(work: Path, model: Path, data: Path, *, name: str, max_length: int, extra: dict) -> dict:
    """`arena predict` on every row of `data`, then on all of them swapped (`predict_config`)."""
    config = predict_config(work, model, data, max_length=max_length, extra=extra)
    result = run_entry("arena_assets.ranker.predict", config, work, name)
    return {**result, "flops_per_token": 2.0 * NON_EMBEDDING_PARAMS_14B}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--loss-steps", type=int, default=50)
    parser.add_argument("--score-rows", type=int, default=256,
                        help="pairs the `score_real_*` and `predict_real_*` variants score (both orders); at "
                             "most the data's")
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
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "dense_bf16_tflops": peak,
           "sustained_bf16_tflops": sustained_bf16_tflops(peak)}
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
            count = 64 if kind == "train" else args.score_rows  # pairs scored, or predicted, both orders
            rows = real_pairs(work, args.real, count, swaps=kind == "train")
            length = 4096
        else:
            model, rows = qwen, long_train if kind == "train" else long_score
        if kind == "train":
            return train_variant(work, model, rows, name=name, max_length=length, extra=extra,
                                 steps=args.steps)  # fmt: skip
        if kind == "predict":
            return predict_variant(work, model, rows, name=name, max_length=length, extra=extra)
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
        submitted = [(job, pool.submit(SLOTS.run, run, job)) for job in jobs]
        for job, future in submitted:
            finished = future.result()
            print(f"== {job}\n{json.dumps(finished)[:600]}", flush=True)
            if job.startswith("loss_2048:"):  # every curve whole, for a check split over calls
                results.setdefault("loss_2048_curves", {})[job.split(":")[1]] = finished
            else:
                if job in results:  # a variant named again: the later run is its figure, the earlier kept
                    results.setdefault("earlier_runs", {}).setdefault(job, []).append(results[job])
                results[job] = finished
            (args.out / "results.json").write_text(json.dumps(results, indent=2))
    futures = dict(submitted)  # each job's last run
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
    print_table(results, chosen, peak, held=env["sustained_bf16_tflops"])


def _tokens_per_second(run: dict) -> float:
    """A run's rate, whichever entry point made it: the trainer's, the scorer's or the predictor's key."""
    keys = ("train_tokens_per_second", "scoring_tokens_per_second", "tokens_per_second")
    return next((run[k] for k in keys if run.get(k)), 0.0)


def print_table(results: dict, chosen: list[str], peak: float, held: float) -> None:
    """tokens/s, share of dense bf16 (the burst rate `peak`, and the rate `held` for seconds), peak memory,
    padding and the ratio to the straightforward recipe; a variant named more than once, a row for each of
    its runs in the order they ran."""
    width = max(len(name) for name in [*chosen, "variant"]) + 2
    print(f"\n{'variant':<{width}}{'tokens/s':>10}{'share':>7}{'held':>6}{'peak GB':>9}{'padding':>9}"
          f"{'vs plain':>10}")
    seen: dict[str, int] = {}
    for name in chosen:
        if name not in results:  # a loss check split over calls: its curves are in results.json
            continue
        runs = [*results.get("earlier_runs", {}).get(name, []), results[name]]
        r = runs[min(seen.get(name, 0), len(runs) - 1)]
        seen[name] = seen.get(name, 0) + 1
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
        rate = _tokens_per_second(r)
        flops = rate * r.get("flops_per_token", 0.0)
        share = f"{flops / (peak * 1e12):.2f}" if flops else ""
        held_share = f"{flops / (held * 1e12):.2f}" if flops else ""
        kind, length = name.split("_")[:2]
        base = results.get(f"{kind}_{length}_plain") or results.get(f"{kind}_2048_plain") or {}
        base_rate = _tokens_per_second(base)
        profiled = {"profile_steps", "profile_passes"} & set(VARIANTS.get(name, ("", 0, {}))[2])
        ratio = "profiled" if profiled else (
            f"{rate / base_rate:.2f}x" if base_rate else "")  # a profiled rate pays the profiler's cost
        print(f"{name:<{width}}{rate:>10.0f}{share:>7}{held_share:>6}{r.get('peak_memory_gb', 0):>9.1f}"
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
