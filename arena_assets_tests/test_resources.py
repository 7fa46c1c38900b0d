"""The launcher: its command, real `accelerate launch` runs through Pipes, failures, and ending the tree."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from arena_assets.process_group import SessionProcess
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource, _failure_description
from arena_assets_tests.fixtures.pipes_child import CHECK_NAME, CHILD_ERROR
from arena_assets_tests.fixtures.pipes_job import (
    CHILD_MODULE,
    REPO_ROOT,
    cpu_launcher,
    materialize_child,
)

GRACE = 2.0


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie counts as ended (an orphan's waits for an init that may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of `pids` is alive; returns those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _wait_for_files(paths: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"child did not write {paths}"
        time.sleep(0.2)


def _step_failure_description(result: dg.ExecuteInProcessResult) -> str:
    [failure] = result.get_step_failure_events()
    return failure.step_failure_data.user_failure_data.description


def _spec(tmp_path: Path, **spec: object) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


# ---- command and environment


def test_command_passes_every_flag_accelerate_would_warn_about() -> None:
    launcher = AccelerateLauncher(cpu=True)
    cmd = launcher.command(module="arena_assets.ranker.trainer", config_path=Path("/a/train.json"))
    threads = cmd[cmd.index("--num_cpu_threads_per_process") + 1]
    assert cmd == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--num_cpu_threads_per_process", threads,
                   "-m", "arena_assets.ranker.trainer", "--config", "/a/train.json"]
    assert int(threads) >= 1


def test_command_for_several_processes_uses_torchrun_with_port() -> None:
    launcher = AccelerateLauncher(num_processes=4, main_process_port=0)
    cmd = launcher.command(module="m", config_path=Path("c.json"))
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    # The ranker's `precision` field decides the compute dtype; accelerate adds no autocast.
    assert cmd[cmd.index("--mixed_precision") + 1] == "no"
    assert "--multi_gpu" in cmd
    assert cmd[-6:] == ["--main_process_port", "0", "-m", "m", "--config", "c.json"]


def test_accelerate_config_file_replaces_the_process_flags() -> None:
    launcher = AccelerateLauncher(num_processes=8, accelerate_config_file="/cfg/fsdp.yaml")
    assert launcher.command(module="m", config_path=Path("c")) == [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "/cfg/fsdp.yaml",
        "-m", "m", "--config", "c"]


def test_without_accelerate_runs_the_module_directly() -> None:
    launcher = AccelerateLauncher(use_accelerate=False, num_processes=2)
    assert launcher.command(module="m", config_path=Path("c")) == [sys.executable, "-m", "m", "--config", "c"]


def test_launch_env_sets_devices_cpu_and_user_values() -> None:
    gpu = AccelerateLauncher(cpu=False, visible_devices="0,1", env={"NCCL_DEBUG": "WARN"})
    assert gpu.launch_env() == {"NCCL_DEBUG": "WARN", "CUDA_VISIBLE_DEVICES": "0,1"}
    # accelerate's Accelerator picks the gloo multi-CPU backend under torchrun only with this variable.
    assert AccelerateLauncher(cpu=True).launch_env() == {"ACCELERATE_USE_CPU": "true"}


def test_settings_resource_overrides_only_what_it_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARENA_PROFILE", raising=False)
    monkeypatch.setenv("ARENA_SEED", "7")
    settings = ArenaSettingsResource(max_length=128, artifact_root="/tmp/arts").settings()
    assert (settings.profile, settings.max_length, settings.seed) == ("demo", 128, 7)
    assert settings.artifact_root == Path("/tmp/arts")
    # Unset: the qwen14b profile changes no size, so its steps take the ranker defaults.
    assert ArenaSettingsResource(profile="qwen14b").settings().max_length is None


def test_launcher_reads_the_process_count_when_it_launches(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = AccelerateLauncher(cpu=True)  # as definitions.py builds it, at import time
    monkeypatch.setenv("ARENA_NUM_PROCESSES", "3")
    cmd = launcher.command(module="m", config_path=Path("c"))
    assert cmd[cmd.index("--num_processes") + 1] == "3"
    assert AccelerateLauncher(num_processes=2).processes() == 2  # the resource's own field wins


def test_failure_headline_is_the_rank_exception_not_the_launcher_wrapper() -> None:
    tail = "\n".join([
        "[rank0]: Traceback (most recent call last):",
        "[rank0]: ValueError: bad batch",
        "Traceback (most recent call last):",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1.",
    ])
    description = _failure_description("m", 1, tail)
    assert description.startswith("m exited with code 1: [rank0]: ValueError: bad batch\n")
    assert description.endswith(tail)


# ---- SessionProcess on plain Python children (fast)

# argv: pid file, then flags: "ignore" (everything ignores SIGTERM), "detach" (a second grandchild in a
# session of its own), "sleep" (the root sleeps instead of exiting).
_TREE_SCRIPT = """
    import json, os, signal, subprocess, sys, time
    flags = sys.argv[2:]
    code = "import signal, time\\n"
    if "ignore" in flags:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    sessions = (False, True) if "detach" in flags else (False,)
    children = [subprocess.Popen([sys.executable, "-c", code + "time.sleep(600)"], start_new_session=new)
                for new in sessions]
    with open(sys.argv[1] + ".tmp", "w") as handle:
        json.dump([os.getpid()] + [child.pid for child in children], handle)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    print("tree started", file=sys.stderr, flush=True)
    if "sleep" in flags:
        time.sleep(600)
"""


def _tree_command(pid_file: Path, *flags: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(_TREE_SCRIPT), str(pid_file), *flags]


def test_interruption_ends_the_whole_tree_and_propagates(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.json"
    cmd = _tree_command(pid_file, "ignore", "detach", "sleep")
    env = {**os.environ}
    with pytest.raises(KeyboardInterrupt), SessionProcess(cmd, env=env, grace_seconds=GRACE) as child:
        _wait_for_files([pid_file], timeout=30)
        started = time.monotonic()
        raise KeyboardInterrupt
    pids = json.loads(pid_file.read_text())
    assert _wait_gone(pids, timeout=0.5) == []
    assert time.monotonic() - started < GRACE + 5
    # Everything ignored SIGTERM, including the grandchild in a session of its own: all needed SIGKILL.
    assert set(pids) <= child.killed_pids


def test_processes_left_behind_after_a_normal_exit_are_ended(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.json"
    # Only same-session leftovers: one that detached and lost its parent before a scan can't be traced.
    cmd = _tree_command(pid_file)
    with SessionProcess(cmd, env={**os.environ}, grace_seconds=GRACE) as child:
        assert child.wait() == 0
    root, *grandchildren = json.loads(pid_file.read_text())
    assert _wait_gone(grandchildren, timeout=0.5) == []
    assert set(grandchildren) <= child.terminated_pids
    assert "tree started" in child.stderr_tail()


def test_stderr_tail_keeps_the_last_lines() -> None:
    code = "import sys\nfor i in range(200): print(f'line {i}', file=sys.stderr)\nsys.exit(3)"
    with SessionProcess([sys.executable, "-c", code], env={**os.environ}, grace_seconds=GRACE) as child:
        assert child.wait() == 3
    assert child.stderr_tail(lines=3).splitlines() == ["line 197", "line 198", "line 199"]


# ---- real runs through Pipes (accelerate launch on CPU)


@pytest.mark.slow
def test_accelerate_child_materializes_with_its_metadata(tmp_path: Path) -> None:
    result = materialize_child(_spec(tmp_path, mode="report"), cpu_launcher(hf_home=tmp_path / "hf"))
    assert result.success
    [materialization] = result.asset_materializations_for_node("child_asset")
    assert materialization.metadata["rows"] == dg.IntMetadataValue(3)
    assert materialization.metadata["world_size"] == dg.IntMetadataValue(1)


@pytest.mark.slow
def test_two_ranks_materialize_once(tmp_path: Path) -> None:
    launcher = cpu_launcher(num_processes=2, hf_home=tmp_path / "hf")
    result = materialize_child(_spec(tmp_path, mode="report"), launcher)
    assert result.success
    [materialization] = result.asset_materializations_for_node("child_asset")
    assert materialization.metadata["world_size"] == dg.IntMetadataValue(2)  # really two ranks (gloo)
    assert [check.check_name for check in result.get_asset_check_evaluations()] == [CHECK_NAME]


@pytest.mark.slow
def test_child_exception_fails_the_step_with_its_message(tmp_path: Path) -> None:
    result = materialize_child(_spec(tmp_path, mode="raise"), cpu_launcher(hf_home=tmp_path / "hf"))
    assert not result.success
    headline = _step_failure_description(result).splitlines()[0]
    assert headline == f"{CHILD_MODULE} exited with code 1: ValueError: {CHILD_ERROR}"


@pytest.mark.slow
def test_child_that_reports_nothing_fails_the_step(tmp_path: Path) -> None:
    result = materialize_child(_spec(tmp_path, mode="silent"), cpu_launcher(use_accelerate=False))
    assert not result.success
    assert "without reporting a materialization" in _step_failure_description(result)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "processes"), [(signal.SIGINT, 2), (signal.SIGTERM, 1)],
                         ids=["SIGINT-torchrun", "SIGTERM-simple-launcher"])
def test_interrupted_run_leaves_no_process(tmp_path: Path, sig: signal.Signals, processes: int) -> None:
    """Signal a process running `materialize`, as a run worker is: every rank and grandchild ends."""
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    spec = _spec(tmp_path, mode="hang", pid_dir=str(pid_dir), ignore_sigterm=True)
    log_path = tmp_path / "job.log"
    with open(log_path, "w") as log:
        command = [sys.executable, "-m", "arena_assets_tests.fixtures.pipes_job", str(spec), str(processes),
                   str(GRACE)]
        job = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    pids: list[int] = []
    try:
        _wait_for_files([pid_dir / f"rank{rank}.json" for rank in range(processes)], timeout=90)
        for rank in range(processes):
            record = json.loads((pid_dir / f"rank{rank}.json").read_text())
            pids += [record["ppid"], record["pid"], *record["grandchildren"]]  # ppid: accelerate/torchrun
        assert all(_alive(pid) for pid in pids)
        job.send_signal(sig)
        assert _wait_gone(pids, timeout=GRACE + 5) == []
        assert job.wait(timeout=30) == 1  # the step failed as interrupted, after the cleanup
        log_text = log_path.read_text()
        assert "ending the process tree" in log_text and "SIGKILL needed for" in log_text
    finally:
        for pid in [job.pid, *pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
