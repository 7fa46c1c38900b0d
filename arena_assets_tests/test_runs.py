"""A CLI run killed during training holds nothing: the next run marks it failed, frees its gpu slot and
ends the training it left behind, then runs its own GPU step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from arena_assets.process_group import process_start_time
from arena_assets.runs import CHILD_TAG, WORKER_TAG, is_dead
from arena_assets_tests.demo_graph import (
    REPO_ROOT,
    arena_env,
    materialize_command,
    materialize_data,
    new_dagster_home,
)

IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def _materialize(select: str, steps: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    config = {
        **IN_PROCESS,
        "ops": {
            "stage1_adapter": {"config": {"max_steps": steps, "max_validation_rows": 8, "log_every_steps": 1}}
        },
    }
    command = materialize_command(select, config)
    with open(log, "wb") as handle:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_a_killed_cli_run_releases_the_gpu_pool(demo_project: Path, tmp_path: Path) -> None:
    home = new_dagster_home(tmp_path / "home")  # the gpu pool limited to one step at a time
    artifacts = tmp_path / "artifacts"
    env = arena_env(demo_project, artifacts, home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert materialize_data(demo_project, artifacts, instance).success

    first = _materialize("stage1_adapter", 5000, env, tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while "step 2/" not in (tmp_path / "first.log").read_text(errors="replace"):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[
            -3000:
        ]
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)  # as a closed terminal or a lost SSH session ends it
    first.wait()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (killed,) = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        orphan = killed.tags[CHILD_TAG + "stage1_adapter"]
    assert killed.status == dg.DagsterRunStatus.STARTED and not is_dead(orphan)  # still training, alone

    second = _materialize("stage1_adapter", 2, env, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {run.run_id: run for run in instance.get_runs()}
        assert runs[killed.run_id].status == dg.DagsterRunStatus.FAILURE
        cli_runs = [r for r in runs.values() if WORKER_TAG in r.tags and r.run_id != killed.run_id]
        assert [r.status for r in cli_runs] == [dg.DagsterRunStatus.SUCCESS]
        assert is_dead(runs[killed.run_id].tags[WORKER_TAG])
    assert is_dead(orphan)  # the killed run's training ended; it cannot overwrite the new adapter later
    metrics = json.loads((artifacts / "stage1_adapter" / "model" / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert f"run {killed.run_id}" in (tmp_path / "second.log").read_text(errors="replace")


def test_process_tokens_name_one_process() -> None:
    assert process_start_time(os.getpid()) is not None
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    assert process_start_time(int(done.stdout)) is None
