"""The whole asset graph on GPUs at the Qwen2.5-14B shape, through Dagster, and how training and scoring
scale over the GPUs of one machine.

Phases (each its own command, so a long run can span calls on one warm machine):

    python benchmarks/gpu_e2e.py data --dir .e2e              # here, on the CPU: raw files + tokenizer
    # on the GPU machine, from the repository root, with the carried wheels on PYTHONPATH:
    python3 benchmarks/gpu_e2e.py backbone --dir .e2e          # 14B-shape random weights saved to disk
    python3 benchmarks/gpu_e2e.py graph-start --dir .e2e       # `dagster asset materialize --select '*'`
    python3 benchmarks/gpu_e2e.py graph-wait --dir .e2e --out $OUT --seconds 500
    python3 benchmarks/gpu_e2e.py scaling --dir .e2e --out $OUT   # 1..N GPUs: DDP, FSDP, scoring
    python3 benchmarks/gpu_e2e.py large --dir .e2e --out $OUT     # a 72B shape scored over all GPUs
    python3 benchmarks/gpu_e2e.py machines --dir .e2e --out $OUT  # two 1-GPU "machines" on this host
    python3 benchmarks/gpu_e2e.py predict --dir .e2e --out $OUT  # the predictor's rows/s, fp16 and bf16
    python benchmarks/gpu_e2e.py balance --dir .e2e               # here: how evenly a step's work splits

`data` generates the raw files in the real schemas with the embedded generator, its responses lengthened so a
judge prompt has the real length distribution (median about 1,100 tokens, a tail cut at 4,096), and enough
rows that each training asset runs at least 20 optimizer steps and each scoring asset scores at least 1,000
pairs in both orders. The backbone is the Qwen2.5-14B shape (DESIGN §6) with the embedded tokenizer, weights
random. The graph runs with the qwen14b profile (the ranker's 14B recipe) on every GPU present.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QWEN14B_SHAPE = {
    "hidden_size": 5120, "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
    "intermediate_size": 13824, "vocab_size": 152064, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False, "max_position_embeddings": 32768,
}  # fmt: skip
# Qwen2.5-72B-Instruct: 145 GB in bf16, more than one 80 GB GPU holds.
QWEN72B_SHAPE = {
    **QWEN14B_SHAPE, "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
    "intermediate_size": 29568,
}  # fmt: skip
# The 33k file repeats 80 rows of the 55k one (cross-source duplicates), so it holds 40 rows of its own.
ROWS = {"wsdm_train": 1300, "wsdm_test": 1000, "lmsys_55k": 100, "lmsys_33k": 120, "open_v1": 400,
        "open_v2": 400, "open_v3": 250}  # fmt: skip
VALIDATION_FRACTION = 0.78  # over 1,000 validation rows to score, about 300 train pairs: 38 steps of 16 rows
RESPONSE_WORDS = (370, 0.55, 60, 3000)  # median about 1,100 tokens per judge prompt with the tiny tokenizer
# A thousand pairs in 64-row shards give every GPU several (the default 2,048-row shards suit 120k pairs).
RUN_CONFIG = {
    "execution": {"config": {"in_process": {}}},
    "ops": {
        "stage1_adapter": {"config": {"max_steps": 24, "max_validation_rows": 256, "log_every_steps": 5}},
        "stage2_adapter": {"config": {"max_steps": 24, "max_validation_rows": 256, "log_every_steps": 5}},
        "open_model_soft_logits": {"config": {"rows_per_shard": 64}},
        "evaluation": {"config": {"rows_per_shard": 64}},
    },
}


def paths(root: Path) -> dict[str, Path]:
    return {name: root / name for name in ("raw", "backbone", "tokenizer", "artifacts", "home")}


def phase_data(root: Path) -> None:
    """Raw files with real lengths, and the embedded tokenizer, under `root` (run on the CPU here)."""
    from arena_assets.embedded import (
        JUDGE_TEXT_REPEATS,
        judge_prompt_text,
        sample_data,
        sources,
        write_sample_data,
    )
    from arena_assets.embedded.tiny_model import train_tokenizer
    from arena_assets.settings import Settings

    sample_data.ROWS.update(ROWS)
    sample_data.RESPONSE_WORDS = RESPONSE_WORDS
    p = paths(root)
    shutil.rmtree(p["raw"], ignore_errors=True)
    data = sources.generate_sample_data(42)
    write_sample_data(data, Settings(project_dir=root, raw_dir=p["raw"], backbone=p["backbone"]), force=True)
    tokenizer = train_tokenizer([*data.corpus, *[judge_prompt_text()] * JUDGE_TEXT_REPEATS], 4096)
    tokenizer.save_pretrained(p["tokenizer"])
    lengths = _judge_lengths(p["raw"] / "wsdm" / "train.parquet", tokenizer)
    print(json.dumps({"rows": {k: v["rows"] for k, v in data.stats.items()}, "judge_tokens": lengths}))


def _judge_lengths(path: Path, tokenizer: object) -> dict[str, float]:
    import pandas as pd

    from arena_assets.ranker.data import encode_frame
    from arena_assets.ranker.prompt import PromptTemplate

    frame = pd.read_parquet(path).head(400)
    encoded = encode_frame(PromptTemplate.from_tokenizer(tokenizer), frame, max_length=4096, rebalance=True)
    return encoded.length_report()


def phase_backbone(root: Path) -> None:
    """The 14B shape with random bf16 weights, saved like a Hugging Face checkpoint (with the tokenizer)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    p = paths(root)
    tokenizer = AutoTokenizer.from_pretrained(p["tokenizer"])
    config = Qwen2Config(
        **QWEN14B_SHAPE,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16",
    )
    start = time.perf_counter()
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    shutil.rmtree(p["backbone"], ignore_errors=True)
    model.save_pretrained(p["backbone"], safe_serialization=True, max_shard_size="5GB")
    tokenizer.save_pretrained(p["backbone"])
    size = sum(f.stat().st_size for f in p["backbone"].iterdir()) / 2**30
    print(json.dumps({"backbone_gb": round(size, 1), "seconds": round(time.perf_counter() - start, 1)}))


def _env(root: Path) -> dict[str, str]:
    import torch

    p = paths(root)
    return {
        **os.environ,
        "ARENA_PROFILE": "qwen14b",
        "ARENA_BACKBONE": str(p["backbone"]),
        "ARENA_RAW_DIR": str(p["raw"]),
        "ARENA_ARTIFACT_ROOT": str(p["artifacts"]),
        "ARENA_VALIDATION_FRACTION": str(VALIDATION_FRACTION),
        "ARENA_NUM_PROCESSES": str(max(1, torch.cuda.device_count())),
        "DAGSTER_HOME": str(p["home"]),
        "PYTHONUNBUFFERED": "1",
    }


def phase_graph_start(root: Path, select: str, parity_atol: float) -> None:
    """Start `dagster asset materialize --select SELECT` in the background, in its own session, logging.

    `--select '*'` starts from scratch; another selection continues the run already in the home.
    """
    p = paths(root)
    run_config = json.loads(json.dumps(RUN_CONFIG))
    if parity_atol:  # merges of bf16 weights at this shape: see benchmarks/RESULTS.md
        for merge in ("merged_stage1_model", "final_model"):
            run_config["ops"][merge] = {"config": {"parity_atol": parity_atol}}
    env = _env(root)
    if select == "*":
        shutil.rmtree(p["artifacts"], ignore_errors=True)
        shutil.rmtree(p["home"], ignore_errors=True)
        p["home"].mkdir(parents=True)
        shutil.copy(REPO / ".dagster_home" / "dagster.yaml", p["home"] / "dagster.yaml")
        subprocess.run([sys.executable, "-m", "arena_assets.cli", "observe"], env=env, cwd=REPO, check=True)
        (root / "graph.start").write_text(str(time.time()))
    (root / "run.json").write_text(json.dumps(run_config))
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "arena_assets.definitions",
               "--select", select, "--config-json", json.dumps(run_config)]  # fmt: skip
    with open(root / "graph.log", "a") as log:  # the child keeps its own descriptor
        child = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (root / "graph.pid").write_text(str(child.pid))
    print(f"graph run started: pid {child.pid}")


def phase_graph_wait(root: Path, out: Path, seconds: float) -> None:
    """Wait up to `seconds` for the graph run; write what it did so far (or in all) to `out`."""
    pid = int((root / "graph.pid").read_text())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(5)
    record = _graph_record(root, finished=not _alive(pid))
    out.mkdir(parents=True, exist_ok=True)
    (out / "graph.json").write_text(json.dumps(record, indent=2))
    shutil.copy(root / "graph.log", out / "graph.log")
    print(json.dumps({k: record[k] for k in ("finished", "assets", "checks", "wall_seconds")}, indent=1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").is_file() and open(f"/proc/{pid}/stat").read().split()[2] != "Z"


def _graph_record(root: Path, *, finished: bool) -> dict:
    """Per-asset status, wall time and headline metadata, and the checks, from the run's Dagster home."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(paths(root)["home"])
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assets, checks, materialized = {}, {}, set()
        for run in runs:
            for record in instance.all_logs(run.run_id):
                event = record.dagster_event
                if event is None:
                    continue
                if event.event_type_value == "STEP_SUCCESS":
                    assets.setdefault(event.step_key, {})["wall_seconds"] = round(
                        event.event_specific_data.duration_ms / 1000, 1
                    )
                    assets[event.step_key]["status"] = "success"
                elif event.event_type_value == "STEP_FAILURE":
                    assets.setdefault(event.step_key, {})["status"] = "failure"
                elif event.event_type_value == "ASSET_MATERIALIZATION":
                    materialized.add(event.step_key)
                    metadata = event.event_specific_data.materialization.metadata
                    keep = {k: v.value for k, v in metadata.items() if isinstance(v.value, int | float)}
                    assets.setdefault(event.step_key, {}).update(keep)
                elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                    data = event.event_specific_data
                    checks[f"{data.asset_key.to_user_string()}:{data.check_name}"] = (
                        "passed" if data.passed else "failed"
                    )
        start = float((root / "graph.start").read_text())
        return {
            "finished": finished,
            "run_status": [str(r.status) for r in runs],
            "wall_seconds": round(time.time() - start, 1),
            # Steps that materialized an asset (a check's step only reports its check).
            "assets": {k: v for k, v in assets.items() if k in materialized},
            "checks": checks,
        }


def _timed_training(root: Path, output_dir: Path, *, steps: int, global_batch_size: int) -> dict:
    """The trainer config the scaling runs share: 14B shape, the graph's hard-label rows, half recomputed."""
    p = paths(root)
    return {"backbone": str(p["backbone"]), "output_dir": str(output_dir),
            "train_path": str(p["artifacts"] / "hard_label_set" / "train.parquet"), "random_init": True,
            "max_steps": steps, "epochs": 0, "per_device_batch_size": 2,
            "global_batch_size": global_batch_size, "gradient_checkpointing": 0.5, "resume": False,
            "log_every_steps": 1, "precision": "bf16"}  # fmt: skip


def phase_scaling(root: Path, out: Path, steps: int) -> None:
    """Trainer and scorer at 1..N processes on the same machine, 14B shape, random weights."""
    import pandas as pd
    import torch

    n_gpus = torch.cuda.device_count()
    p = paths(root)
    work = root / "scaling"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pairs = pd.read_parquet(p["artifacts"] / "open_model_pairs" / "rows.parquet").head(512)
    pairs.to_parquet(work / "pairs.parquet")
    results: dict = {"train": {}, "score": {}}
    for n in range(1, n_gpus + 1):
        train = _timed_training(root, work / f"adapter{n}", steps=steps, global_batch_size=8 * n)
        results["train"][str(n)] = _launch(n, "arena_assets.ranker.trainer", train, work / f"train{n}.json")
        if n > 1:  # the same run with backbone, adapters and optimizer state sharded (TrainConfig.fsdp)
            fsdp = {**train, "output_dir": str(work / f"fsdp{n}"), "fsdp": True}
            results.setdefault("train_fsdp", {})[str(n)] = _launch(
                n, "arena_assets.ranker.trainer", fsdp, work / f"fsdp{n}.json"
            )
        score = {"model": str(p["backbone"]), "random_init": True, "input_path": str(work / "pairs.parquet"),
                 "output_dir": str(work / f"scores{n}"), "rows_per_shard": 64, "precision": "bf16",
                 "max_length": 4096, "token_budget": 16384}  # fmt: skip
        results["score"][str(n)] = _launch(n, "arena_assets.ranker.scorer", score, work / f"score{n}.json")
        out.mkdir(parents=True, exist_ok=True)
        (out / "scaling-partial.json").write_text(json.dumps(results, indent=2))  # a cut-off call keeps these
    base_train = results["train"]["1"].get("train_tokens_per_second") or 1.0
    for kind in ("train", "train_fsdp", "score"):
        key = "scoring_tokens_per_second" if kind == "score" else "train_tokens_per_second"
        runs = results.get(kind, {})
        rates = {n: r.get(key, 0.0) for n, r in runs.items()}
        # FSDP is measured against one GPU of plain DDP training (FSDP on one GPU is the same run).
        base = base_train if kind == "train_fsdp" else (rates.get("1") or 1.0)
        runs["tokens_per_second"] = rates
        runs["tokens_per_second_per_gpu"] = {n: rate / int(n) for n, rate in rates.items()}
        runs["peak_memory_gb_per_gpu"] = {n: r.get("peak_memory_gb", 0.0) for n, r in runs.items()
                                          if isinstance(r, dict) and "peak_memory_gb" in r}
        runs["efficiency"] = min((rate / (base * int(n)) for n, rate in rates.items()), default=0.0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=2))
    print(
        json.dumps(
            {
                k: {key: v[key] for key in ("tokens_per_second", "efficiency", "peak_memory_gb_per_gpu")}
                for k, v in results.items()
            },
            indent=1,
        )
    )


def phase_large(root: Path, out: Path, rows: int) -> None:
    """Larger than one GPU: the 72B shape (random weights) scored by one process over every GPU
    (`device_map: auto`), and the 14B stage-1 merge run spread the same way."""
    import pandas as pd

    p = paths(root)
    work = root / "large"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shape = work / "qwen72b-shape"
    _write_shape(shape, QWEN72B_SHAPE, p["tokenizer"])
    pd.read_parquet(p["artifacts"] / "open_model_pairs" / "rows.parquet").head(rows).to_parquet(
        work / "pairs.parquet"
    )
    score = {"model": str(shape), "random_init": True, "device_map": "auto", "precision": "bf16",
             "input_path": str(work / "pairs.parquet"), "output_dir": str(work / "scores72b"),
             "max_length": 4096, "token_budget": 16384, "rows_per_shard": 64}  # fmt: skip
    results = {"score_72b": _launch(1, "arena_assets.ranker.scorer", score, work / "score72b.json")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "large.json").write_text(json.dumps(results, indent=2))
    merge = {"backbone": str(p["backbone"]), "adapter_dir": str(p["artifacts"] / "stage1_adapter" / "model"),
             "output_dir": str(work / "merged14b"), "device_map": "auto", "parity_atol": 0.5,
             "max_length": 4096}  # fmt: skip
    results["merge_14b_spread"] = _launch(1, "arena_assets.ranker.merger", merge, work / "merge.json")
    out.mkdir(parents=True, exist_ok=True)
    (out / "large.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=1)[:3000])


def _write_shape(directory: Path, shape: dict, tokenizer_dir: Path) -> None:
    """config.json of a model shape plus the tokenizer (its weights are built at random where used)."""
    from transformers import AutoTokenizer, Qwen2Config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    Qwen2Config(**shape, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id).save_pretrained(directory)  # fmt: skip
    tokenizer.save_pretrained(directory)


def phase_machines(root: Path, out: Path, steps: int) -> None:
    """Two "machines" of one GPU each on this host (machine_rank 0 and 1, static rendezvous on 127.0.0.1),
    started by the launcher resource's own command, against two processes of one machine."""
    import socket

    from arena_assets.resources import AccelerateLauncher

    with socket.socket() as sock:  # one fixed port both machines are told (the launcher's 0 is per launch)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    work = root / "machines"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # The scaling phase's 2-process run on the same steps is what this compares with.
    train = _timed_training(root, work / "adapter", steps=steps, global_batch_size=16)
    config_path = work / "train.json"
    config_path.write_text(json.dumps(train))
    fields = {"num_processes": 1, "num_machines": 2, "main_process_ip": "127.0.0.1",
              "main_process_port": port}  # fmt: skip
    children = []
    start = time.perf_counter()
    for rank in (0, 1):
        launcher = AccelerateLauncher(**fields, machine_rank=rank, visible_devices=str(rank))
        command = launcher.command(module="arena_assets.ranker.trainer", config_path=config_path)
        log = open(work / f"machine-{rank}.log", "w")  # noqa: SIM115 - closed when the child ends
        children.append((subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, **launcher.launch_env()}), log))  # fmt: skip
    codes = [child.wait(timeout=900) for child, _ in children]
    for _, log in children:
        log.close()
    metrics_file = work / "adapter" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    result = {
        "exit_codes": codes,
        "wall_seconds": round(time.perf_counter() - start, 1),
        **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "written_by_machine_0_only": sorted(x.name for x in work.iterdir()),
        "log_tail": {r: (work / f"machine-{r}.log").read_text()[-1500:] for r in (0, 1)},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "machines.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=1))
    if any(codes):
        print(json.dumps(result["log_tail"], indent=1))


def phase_balance(root: Path) -> None:
    """The DDP efficiency bound of the step plan at these lengths (CPU, no GPU): each step lasts as long as
    its busiest rank, so mean / max of the ranks' padded tokens, summed over the steps, bounds the scaling
    efficiency. Round robin (micro-batch r, r+N, ... to rank r) against `shard_batches`' balancing."""
    import numpy as np
    from transformers import AutoTokenizer

    from arena_assets.hard_labels import build_hard_label_set
    from arena_assets.ranker.collate import plan_steps, shard_batches
    from arena_assets.ranker.config import TrainConfig
    from arena_assets.ranker.data import encode_frame
    from arena_assets.ranker.prompt import PromptTemplate
    from arena_assets.readers import read_source

    raw = paths(root)["raw"]
    frames = [read_source("wsdm_train", [raw / "wsdm" / "train.parquet"]).frame,
              read_source("lmsys_55k", [raw / "lmsys_55k" / "train.csv"]).frame,
              read_source("lmsys_33k", sorted((raw / "lmsys_33k").glob("*.csv"))).frame]  # fmt: skip
    train = build_hard_label_set(frames, validation_fraction=VALIDATION_FRACTION, seed=42).train
    template = PromptTemplate.from_tokenizer(AutoTokenizer.from_pretrained(paths(root)["tokenizer"]))
    lengths = encode_frame(template, train, max_length=4096, rebalance=True).lengths
    report = {}
    for n in (2, 3, 4, 8):
        config = TrainConfig(per_device_batch_size=2, global_batch_size=8 * n, epochs=1.0)
        bound = {"round_robin": [0.0, 0.0], "balanced": [0.0, 0.0]}
        for step in plan_steps(config, lengths, num_processes=n):
            costs = [len(rows) * max(lengths[r] for r in rows) for rows in step]
            for name, given in (("round_robin", None), ("balanced", costs)):
                loads = [sum(costs[step.index(b)] for b in shard_batches(step, num_processes=n,
                                                                         process_index=r, costs=given))
                         for r in range(n)]  # fmt: skip
                bound[name][0] += float(np.mean(loads))
                bound[name][1] += max(loads)
        report[n] = {name: round(mean / busiest, 3) for name, (mean, busiest) in bound.items()}
    print(json.dumps({"train_rows": len(train), "efficiency_bound": report}, indent=1))


def phase_predict(root: Path, out: Path, rows: int) -> None:
    """The predictor's rows/s at the 14B shape in fp16 and bf16 (one order, then both), one GPU."""
    import pandas as pd

    from arena_assets.ranker.config import PredictConfig
    from arena_assets.ranker.predict import predict

    p = paths(root)
    work = root / "predict"
    work.mkdir(parents=True, exist_ok=True)
    test = pd.read_parquet(p["raw"] / "wsdm" / "test.parquet").head(rows)
    test.to_parquet(work / "test.parquet")
    results = {}
    for precision in ("fp16", "bf16"):
        for share in (0.0, 1.0):
            config = PredictConfig(
                model=str(p["backbone"]),
                input_path=str(work / "test.parquet"),
                output_path=str(work / f"{precision}-{share}.csv"),
                precision=precision,
                max_length=4096,
                tta_share=share,
            )
            results[f"{precision}_tta{share:g}"] = predict(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: round(v["rows_per_second"], 2) for k, v in results.items()}))


def _launch(n: int, module: str, config: dict, path: Path) -> dict:
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               *(["--multi_gpu"] if n > 1 else []), "-m", module, "--config", str(path)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    line = next((text for text in reversed(done.stdout.splitlines()) if "materialization:" in text), "")
    if done.returncode != 0:
        return {"error": done.stderr[-1500:], "wall_seconds": wall}
    metrics_file = Path(config["output_dir"]) / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return {**metrics, "wall_seconds": round(wall, 1), "summary": line[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "phase",
        choices=["data", "backbone", "graph-start", "graph-wait", "scaling", "large", "machines", "predict",
                 "balance"],
    )
    parser.add_argument("--dir", type=Path, default=Path(".e2e"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/e2e-out"))
    parser.add_argument("--seconds", type=float, default=500)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--select", default="*", help="graph-start: '*' from scratch, or what to continue")
    parser.add_argument("--parity-atol", type=float, default=0.0, help="graph-start: the merges' tolerance")
    args = parser.parse_args()
    root = args.dir.resolve()
    if args.phase == "data":
        phase_data(root)
    elif args.phase == "backbone":
        phase_backbone(root)
    elif args.phase == "graph-start":
        phase_graph_start(root, args.select, args.parity_atol)
    elif args.phase == "graph-wait":
        phase_graph_wait(root, args.out, args.seconds)
    elif args.phase == "scaling":
        phase_scaling(root, args.out, args.steps)
    elif args.phase == "large":
        phase_large(root, args.out, args.rows)
    elif args.phase == "machines":
        phase_machines(root, args.out, args.steps)
    elif args.phase == "balance":
        phase_balance(root)
    else:
        phase_predict(root, args.out, args.rows)


if __name__ == "__main__":
    main()
