"""Several processes on the CPU (gloo ranks under a real `accelerate launch`): the batch plan, a DDP training
run against one process, rank-0-only reporting through Dagster, the scorer's shards, the accelerate config
files, and FSDP training against DDP (docs/multi-gpu.md)."""

import dataclasses
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType
from accelerate.utils.launch import prepare_multi_gpu_env
from safetensors.torch import load_file
from transformers import AutoTokenizer

from arena_assets.hard_labels import build_hard_label_set
from arena_assets.ranker import trainer
from arena_assets.ranker.artifacts import LOGIT_COLUMNS
from arena_assets.ranker.collate import shard_batches
from arena_assets.ranker.config import ScoreConfig, TrainConfig, save_config
from arena_assets.ranker.data import encode_frame, read_pairs
from arena_assets.ranker.prompt import PromptTemplate
from arena_assets.ranker.scorer import score
from arena_assets.ranker.trainer import plan_steps, train
from arena_assets.readers import read_source
from arena_assets.resources import AccelerateLauncher
from arena_assets.settings import Settings
from arena_assets_tests.fixtures.cpus import cpu_halves, on_cpus

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs" / "accelerate"
TRAINER = "arena_assets.ranker.trainer"
SCORER = "arena_assets.ranker.scorer"
TRAIN_PAIRS = 63  # odd: one batch of the epoch holds a single pair, so ranks can hold unequal rows
SCORE_ROWS = 100
ROWS_PER_SHARD = 16  # 100 rows: 7 shards, the last one short
MAX_STEPS = 8
# Same rows, shapes and dtype (fp32) in both runs; only the order of the gradient sum differs (gloo's
# all-reduce of two halves vs. accumulation), which moves results by fp32 rounding (~1e-7; 0.0 observed).
# Unequal per-rank weighting of a short batch moved the adapter by 3e-4, so 1e-5 separates the two.
TOLERANCE = 1e-5
PACKED_TOLERANCE = 1e-4  # packed against padded rows: other matmul shapes round otherwise (see its test)


@dataclass(frozen=True)
class DistData:
    """Inputs of the distributed runs."""

    backbone: Path
    train: Path  # TRAIN_PAIRS swap pairs, rows 2k and 2k+1 adjacent
    score: Path  # SCORE_ROWS validation rows with unique ids


@pytest.fixture(scope="module")
def dist_data(demo_project: Path, tmp_path_factory: pytest.TempPathFactory) -> DistData:
    """A small train and scoring set from the embedded sample data."""
    settings = Settings(project_dir=demo_project)
    frame = read_source("wsdm_train", [settings.wsdm_train_path]).frame
    built = build_hard_label_set([frame], validation_fraction=0.1, seed=0)
    root = tmp_path_factory.mktemp("dist_data")
    built.train.iloc[: 2 * TRAIN_PAIRS].to_parquet(root / "train.parquet", index=False)
    built.validation.iloc[:SCORE_ROWS].to_parquet(root / "score.parquet", index=False)
    return DistData(backbone=settings.backbone, train=root / "train.parquet", score=root / "score.parquet")


def _train_config(data: DistData, output_dir: Path) -> TrainConfig:
    """fp32, no dropout (each rank would draw its own masks) and no warmup, so runs compare exactly."""
    return TrainConfig(
        backbone=str(data.backbone), output_dir=str(output_dir), train_path=str(data.train),
        lora_r=8, lora_alpha=16, lora_dropout=0.0, max_length=192, max_steps=MAX_STEPS,
        per_device_batch_size=4, global_batch_size=8, lr_lora_a=2e-3, lr_lora_b=4e-3, warmup_ratio=0.0,
        precision="fp32", gradient_checkpointing=0.0, attn_implementation="sdpa", use_liger="off",
        resume=False, log_every_steps=1, seed=42,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher(hf_home: Path) -> AccelerateLauncher:
    """Two gloo ranks on a free port (tests of other sessions may hold torchrun's default 29500)."""
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return AccelerateLauncher(num_processes=2, cpu=True, main_process_port=_free_port(), env=env)


@contextmanager
def _one_thread() -> Iterator[None]:
    """One thread for an in-process reference, as the ranks have on 2 cores (other counts may round apart)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pairs_of(rows: list[int]) -> list[int]:
    assert rows[0::2] == [r - 1 for r in rows[1::2]] and all(r % 2 == 0 for r in rows[0::2]), rows
    return [r // 2 for r in rows[0::2]]


# ---- the batch plan (pure)


def _plan_config(**overrides: object) -> TrainConfig:
    values = {"per_device_batch_size": 4, "global_batch_size": 8, "epochs": 1.0, "seed": 3, **overrides}
    return TrainConfig(**values)


def _lengths(pairs: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 400, size=2 * pairs)


def test_ranks_get_whole_disjoint_pairs_and_as_many_micro_batches() -> None:
    config = _plan_config()
    pairs = 61  # 31 micro-batches of 2 pairs (one of 1 pair): the last step keeps 0 of its 1 for 2 ranks
    steps = plan_steps(config, _lengths(pairs), num_processes=2)
    ranks = [[rows for step in steps for rows in shard_batches(step, num_processes=2, process_index=r)]
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 15
    rank_pairs = [[pair for rows in micro for pair in _pairs_of(rows)] for micro in ranks]
    assert all(len(set(p)) == len(p) for p in rank_pairs)
    assert not set(rank_pairs[0]) & set(rank_pairs[1])
    # Dropped tail: at most N-1 = 1 micro-batch (of 2 pairs) per run, from the last, incomplete step.
    missing = set(range(pairs)) - set(rank_pairs[0]) - set(rank_pairs[1])
    assert len(missing) <= 2
    [last] = plan_steps(config, _lengths(pairs), num_processes=1)[-1:]
    assert missing == set(_pairs_of(last[0]))


@pytest.mark.parametrize("num_processes", [2, 4])
@pytest.mark.parametrize(("per_device", "epochs"), [(2, 1.0), (2, 2.0), (4, 1.5)])
def test_step_rows_do_not_depend_on_the_process_count(num_processes: int, per_device: int,
                                                      epochs: float) -> None:
    config = _plan_config(per_device_batch_size=per_device, global_batch_size=16, epochs=epochs)
    lengths = _lengths(97)
    single = plan_steps(config, lengths, num_processes=1)
    several = plan_steps(config, lengths, num_processes=num_processes)
    # Every step but a short last one is the same rows; the last keeps a multiple of N micro-batches.
    assert several[:-1] == single[: len(several) - 1]
    assert len(single) - len(several) in (0, 1)
    assert single[len(several) - 1][: len(several[-1])] == several[-1]
    for step in several:
        shards = [shard_batches(step, num_processes=num_processes, process_index=r)
                  for r in range(num_processes)]
        assert len({len(shard) for shard in shards}) == 1
        assert sorted(rows for shard in shards for rows in shard) == sorted(step)


def test_ranks_balance_a_steps_padded_tokens_with_as_many_micro_batches_each() -> None:
    costs = [4096, 300, 280, 3900, 350, 310, 2000, 2100]  # padded tokens of 8 micro-batches, 4 ranks
    batches = [[2 * i, 2 * i + 1] for i in range(len(costs))]
    shares = [shard_batches(batches, num_processes=4, process_index=r, costs=costs) for r in range(4)]
    assert sorted(b for share in shares for b in share) == batches and {len(s) for s in shares} == {2}
    loads = [sum(costs[batches.index(b)] for b in share) for share in shares]
    round_robin = [sum(costs[r::4]) for r in range(4)]
    assert max(loads) < max(round_robin)
    # The step lasts as long as its busiest rank: 4,376 padded tokens (3,334 on average), against 6,000.
    assert max(loads) == 4376 and max(round_robin) == 6000
    # With equal costs it is plain round robin, each rank's batches in the step's order.
    assert shard_batches(batches, num_processes=4, process_index=1, costs=[7] * 8) == [batches[1], batches[5]]


def test_token_budget_micro_batches_fit_the_budget_and_every_rank_gets_as_many() -> None:
    lengths, budget = _lengths(97), 1600  # rows of 20 to 400 tokens: up to 4 short pairs in one forward
    plans = {n: plan_steps(_plan_config(global_batch_size=16, micro_batch_tokens=budget), lengths,
                           num_processes=n) for n in (1, 2, 4)}  # fmt: skip
    rows_of = lambda steps: [sorted(r for micro in step for r in micro) for step in steps]  # noqa: E731
    # 97 pairs: 12 steps of 8 pairs and one of 1 pair, which 2 or 4 ranks cannot share.
    assert sorted(len(rows) for rows in rows_of(plans[1])) == [2] + [16] * 12
    for n, steps in plans.items():
        assert rows_of(steps) == [rows for rows in rows_of(plans[1]) if len(rows) == 16 or n == 1]
        for step in steps:
            assert len(step) % n == 0
            for rows in step:
                assert rows[1::2] == [r + 1 for r in rows[0::2]]  # whole swap pairs
                assert len(rows) == 2 or len(rows) * max(lengths[r] for r in rows) <= budget
    assert max(len(rows) for step in plans[1] for rows in step) > 2  # short rows share a forward pass


def test_fewer_micro_batches_than_processes_fail_loudly() -> None:
    with pytest.raises(ValueError, match="cannot be shared among 4 processes"):
        plan_steps(_plan_config(global_batch_size=16), _lengths(5), num_processes=4)


# ---- training: two ranks through the launcher resource, inside Dagster


class TrainRun(dg.Config):
    """Where the trainer's config file is."""

    config_path: str


@dg.asset
def ddp_adapter(context: dg.AssetExecutionContext, config: TrainRun,
                launcher: AccelerateLauncher) -> dg.MaterializeResult:
    """A LoRA adapter trained by two processes."""
    return launcher.materialize(context=context, module=TRAINER, config_path=Path(config.config_path))


@dataclass(frozen=True)
class DdpRun:
    """The Dagster result of the two-process training and where it wrote."""

    result: dg.ExecuteInProcessResult
    instance: dg.DagsterInstance
    config: TrainConfig


@pytest.fixture(scope="module")
def ddp_run(dist_data: DistData, tmp_path_factory: pytest.TempPathFactory) -> DdpRun:
    """One two-process training run, shared by the tests below (each run costs half a minute on 2 cores)."""
    root = tmp_path_factory.mktemp("ddp")
    config = _train_config(dist_data, root / "run" / "adapter")
    config_path = save_config(config, root / "train.json")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [ddp_adapter], resources={"launcher": _launcher(root / "hf")}, instance=instance,
        raise_on_error=False,
        run_config={"ops": {"ddp_adapter": {"config": {"config_path": str(config_path)}}}},
    )
    return DdpRun(result=result, instance=instance, config=config)


@pytest.mark.slow
def test_only_rank_zero_reports_to_dagster(ddp_run: DdpRun) -> None:
    assert ddp_run.result.success
    [materialization] = ddp_run.result.asset_materializations_for_node("ddp_adapter")
    metadata = materialization.metadata
    assert metadata["num_processes"] == dg.IntMetadataValue(2)
    assert metadata["steps"] == dg.IntMetadataValue(MAX_STEPS)
    assert metadata["adapter_dir"] == dg.MetadataValue.path(ddp_run.config.output_dir)
    assert np.isfinite(metadata["train_loss_final"].value)
    # Rank 1 logs locally at debug level only: each progress line reaches Dagster once.
    messages = [entry.user_message for entry in ddp_run.instance.all_logs(ddp_run.result.run_id)]
    assert sum("optimizer steps of" in message for message in messages) == 1
    assert sum(f"step {MAX_STEPS}/{MAX_STEPS} loss" in message for message in messages) == 1


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(ddp_run: DdpRun, dist_data: DistData,
                                                                 tmp_path: Path) -> None:
    assert ddp_run.result.success
    two = ddp_run.config
    out = Path(two.output_dir)
    assert sorted(p.name for p in out.parent.iterdir()) == ["adapter"]  # no .tmp- or .work leftovers
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_processes"], metrics["steps"]) == (2, MAX_STEPS)

    # The plan puts the one-pair batch in a step run here, where the ranks hold 4 and 2 rows: the
    # gradient must still be the mean over the step's 6 rows, as with one process.
    tokenizer = AutoTokenizer.from_pretrained(two.backbone)
    lengths = encode_frame(PromptTemplate.from_tokenizer(tokenizer), read_pairs(two.train_path),
                           max_length=two.max_length, rebalance=two.rebalance_truncation).lengths
    steps = plan_steps(two, lengths, num_processes=2)[:MAX_STEPS]
    assert any(len({len(rows) for rows in step}) > 1 for step in steps), "no short batch in the steps run"

    # One process, per-device batch 4 with 2 accumulation steps: each step is the same 8 (or 6) rows.
    one = dataclasses.replace(two, output_dir=str(tmp_path / "one" / "adapter"))
    with _one_thread():
        reference = train(one)
    assert reference["num_processes"] == 1
    curve_one, curve_two = np.array(reference["train_loss_curve"]), np.array(metrics["train_loss_curve"])
    assert curve_one[:, 0].tolist() == curve_two[:, 0].tolist() == list(range(1, MAX_STEPS + 1))
    np.testing.assert_allclose(curve_two[:, 1], curve_one[:, 1], rtol=0, atol=TOLERANCE)
    weights_one = load_file(Path(one.output_dir) / "adapter_model.safetensors")
    weights_two = load_file(out / "adapter_model.safetensors")
    assert weights_one.keys() == weights_two.keys() and any("lora_B" in k for k in weights_one)
    diff = max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one)
    assert diff < TOLERANCE, f"LoRA weights differ by {diff}"
    # Training moved them, so the match is not two untouched initialisations.
    assert all(weights_two[k].abs().max() > 0 for k in weights_two if "lora_B" in k)


def test_more_machines_need_the_rendezvous_address() -> None:
    where = {"module": TRAINER, "config_path": Path("train.json")}
    with pytest.raises(ValueError, match="main_process_ip and a fixed main_process_port"):
        AccelerateLauncher(num_processes=1, num_machines=2, cpu=True).command(**where)
    command = AccelerateLauncher(num_processes=4, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1",
                                 main_process_port=29500, cpu=True).command(**where)

    def flag(name: str) -> str:
        return command[command.index(name) + 1]

    assert (flag("--num_processes"), flag("--num_machines"), flag("--machine_rank")) == ("8", "2", "1")
    assert (flag("--main_process_ip"), flag("--rdzv_backend")) == ("10.0.0.1", "static")
    assert "--multi_gpu" in command


@pytest.mark.slow
def test_two_machines_on_one_host_train_like_two_processes(ddp_run: DdpRun, dist_data: DistData,
                                                           tmp_path: Path) -> None:
    """Machines 0 and 1 (one gloo rank each) meet at a static rendezvous on 127.0.0.1: machine 0 runs under
    Dagster, machine 1 as another node would start the same command; only global rank 0 writes and reports.
    They pack their rows (ranker/packing.py), so the packed layout also crosses DDP's forward."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    fields = {"num_processes": 1, "num_machines": 2, "main_process_ip": "127.0.0.1",
              "main_process_port": _free_port(), "cpu": True, "env": env}
    config = dataclasses.replace(_train_config(dist_data, tmp_path / "run" / "adapter"), pack_sequences=True)
    config_path = save_config(config, tmp_path / "train.json")
    machine_1 = AccelerateLauncher(**fields, machine_rank=1)
    # Each machine on half the CPUs, as two hosts have their own: on all of them, each launcher would give
    # its rank a thread per CPU, and two ranks' threads on too few cores wait on each other (twice the time).
    hosts = cpu_halves()
    with open(tmp_path / "machine-1.log", "w") as log:
        with on_cpus(hosts[1]):  # machine 1 inherits them, and its launcher counts them
            other = subprocess.Popen(machine_1.command(module=TRAINER, config_path=config_path), stdout=log,
                                     env={**os.environ, **machine_1.launch_env()}, stderr=subprocess.STDOUT)
        try:
            instance = dg.DagsterInstance.ephemeral()
            with on_cpus(hosts[0]):  # machine 0, launched from this process
                result = dg.materialize(
                    [ddp_adapter], resources={"launcher": AccelerateLauncher(**fields)}, instance=instance,
                    raise_on_error=False,
                    run_config={"ops": {"ddp_adapter": {"config": {"config_path": str(config_path)}}}},
                )
            assert other.wait(timeout=300) == 0, (tmp_path / "machine-1.log").read_text()[-3000:]
        finally:
            other.kill()
    assert result.success
    [materialization] = result.asset_materializations_for_node("ddp_adapter")
    assert materialization.metadata["num_processes"] == dg.IntMetadataValue(2)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert sum(f"step {MAX_STEPS}/{MAX_STEPS} loss" in message for message in messages) == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["adapter"]
    # The same two ranks' arithmetic as the two processes of one machine, packed or padded: the same losses
    # and adapter. Packed matmuls have other shapes, so fp32 sums round otherwise, and Adam's normalised
    # steps carry that into the weights (2.2e-5 observed).
    curves = [json.loads((Path(c.output_dir) / "metrics.json").read_text())["train_loss_curve"]
              for c in (config, ddp_run.config)]  # fmt: skip
    np.testing.assert_allclose(np.array(curves[0]), np.array(curves[1]), rtol=0, atol=TOLERANCE)
    weights = load_file(Path(config.output_dir) / "adapter_model.safetensors")
    reference = load_file(Path(ddp_run.config.output_dir) / "adapter_model.safetensors")
    diff = max((weights[k] - reference[k]).abs().max().item() for k in reference)
    assert diff < PACKED_TOLERANCE, f"LoRA weights differ by {diff}"


# ---- scoring: shard k on rank k mod 2, merged by rank 0


@pytest.mark.slow
def test_two_processes_score_each_row_once_like_one(dist_data: DistData, tmp_path: Path) -> None:
    def config(output_dir: Path) -> ScoreConfig:
        return ScoreConfig(model=str(dist_data.backbone), input_path=str(dist_data.score),
                           output_dir=str(output_dir), max_length=192, token_budget=2048, max_batch_rows=8,
                           rows_per_shard=ROWS_PER_SHARD, precision="fp32", attn_implementation="sdpa",
                           use_liger="off")

    two = config(tmp_path / "two")
    launcher = _launcher(tmp_path / "hf")
    command = launcher.command(module=SCORER, config_path=save_config(two, tmp_path / "score.json"))
    run = subprocess.run(command, env={**os.environ, **launcher.launch_env()}, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    shard_count = -(-SCORE_ROWS // ROWS_PER_SHARD)
    ids = pd.read_parquet(dist_data.score)["id"].astype(str).tolist()
    shard_dir = Path(two.output_dir + ".work")
    shards = [pd.read_parquet(next(shard_dir.glob(f"shard-{k:05d}-*.parquet"))) for k in range(shard_count)]
    assert [row for shard in shards for row in shard["id"]] == ids  # each row in exactly one shard, in order
    # Rank 0 logs only its own shards (k = 0, 2, 4, 6): rank 1 scored the others.
    logged = {int(k) for k in re.findall(rf"shard (\d+)/{shard_count}: ", run.stdout + run.stderr)}
    assert logged == set(range(1, shard_count + 1, 2))
    metrics = json.loads((Path(two.output_dir) / "metrics.json").read_text())
    assert (metrics["rows"], metrics["rows_scored_this_run"], metrics["shards"]) == (SCORE_ROWS, SCORE_ROWS,
                                                                                     shard_count)

    merged = pd.read_parquet(Path(two.output_dir) / "logits.parquet")
    assert merged["id"].tolist() == ids
    with _one_thread():
        score(config(tmp_path / "one"))
    reference = pd.read_parquet(tmp_path / "one" / "logits.parquet")
    assert reference["id"].tolist() == ids
    columns = list(LOGIT_COLUMNS)
    np.testing.assert_allclose(merged[columns].to_numpy(), reference[columns].to_numpy(), rtol=0,
                               atol=TOLERANCE)


# ---- accelerate config files


def _launch_env(config_file: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file F` gives the ranks on a multi-GPU machine."""
    argv = ["--config_file", str(config_file), "-m", TRAINER, "--config", "train.json"]
    args = launch_command_parser().parse_args(argv)
    # The launcher's own step that merges a config file into its arguments (no public API does this).
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args)


def test_ddp_config_launches_plain_data_parallel_ranks() -> None:
    env = _launch_env(CONFIGS / "ddp.yaml")
    assert "ACCELERATE_USE_FSDP" not in env and env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_trainer_refuses_accelerates_fsdp_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    fsdp_accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP)
    monkeypatch.setattr(trainer, "Accelerator", lambda **_: fsdp_accelerator)
    with pytest.raises(ValueError, match="set fsdp: true"):
        train(TrainConfig())


# ---- FSDP: the trainer's own sharding (ranker/sharding.py) on two gloo ranks


@pytest.mark.slow
def test_fsdp_trains_like_ddp_and_resumes_from_each_ranks_shards(ddp_run: DdpRun, dist_data: DistData,
                                                                 tmp_path: Path) -> None:
    """Two ranks shard backbone, adapters and optimizer state; a run killed after its step-2 checkpoint (one
    file per rank) resumes and ends with the DDP run's adapter: the same rows, the same mean gradients. Its
    validation runs through the sharded head on both ranks."""
    config = dataclasses.replace(ddp_run.config, output_dir=str(tmp_path / "run" / "adapter"), fsdp=True,
                                 resume=True, checkpoint_every_steps=2, validation_path=str(dist_data.score),
                                 max_validation_rows=16)
    launcher = _launcher(tmp_path / "hf")
    command = launcher.command(module=TRAINER, config_path=save_config(config, tmp_path / "train.json"))
    env = {**os.environ, **launcher.launch_env()}
    work = Path(config.output_dir + ".work")
    first = work / "checkpoint-00000002"
    with open(tmp_path / "killed.log", "w") as log:
        launch = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not (first / "state.json").is_file():
                assert launch.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.01)
        finally:
            # The ranks run in sessions of their own (torch's elastic agent): kill the whole tree, as a
            # dying node would.
            tree = psutil.Process(launch.pid)
            for process in [tree, *tree.children(recursive=True)]:
                process.kill()
            launch.wait()
    assert sorted(p.name for p in first.iterdir()) == [
        "rng-0.pt", "rng-1.pt", "state.json", "trainer-0.pt", "trainer-1.pt"]
    assert not Path(config.output_dir).exists()

    resumed = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "(FSDP, sharded)" in output and "resumed from step " in output, output[-3000:]
    metrics = json.loads((Path(config.output_dir) / "metrics.json").read_text())
    assert metrics["val_rows"] == 16 and 0 <= metrics["val_accuracy"] <= 1
    assert np.isfinite(metrics["val_log_loss"])
    reference = json.loads((Path(ddp_run.config.output_dir) / "metrics.json").read_text())
    np.testing.assert_allclose(np.array(metrics["train_loss_curve"]), np.array(reference["train_loss_curve"]),
                               rtol=0, atol=TOLERANCE)
    weights = load_file(Path(config.output_dir) / "adapter_model.safetensors")
    expected = load_file(Path(ddp_run.config.output_dir) / "adapter_model.safetensors")
    assert weights.keys() == expected.keys()
    diff = max((weights[k] - expected[k]).abs().max().item() for k in expected)
    assert diff < TOLERANCE, f"LoRA weights differ by {diff}"
