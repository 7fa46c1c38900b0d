"""`dagster asset materialize -m arena_assets.definitions` as a user runs it, settings from the env."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from arena_assets_tests.demo_graph import REPO_ROOT, arena_env, materialize_command, new_dagster_home

# The multiprocess executor (the CLI's default, what `make demo` uses) starts a Python per step: about
# 15 s each on two busy cores, two minutes for this selection. In one process the same run takes seconds.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def materialize(select: str, config: dict, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        materialize_command(select, config),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_materialize_data_group(demo_project: Path, tmp_path: Path) -> None:
    home = new_dagster_home(tmp_path / "home")
    artifacts = tmp_path / "artifacts"
    done = materialize("*hard_label_set", IN_PROCESS, arena_env(demo_project, artifacts, home))
    assert done.returncode == 0, done.stderr[-3000:]

    for name in ("wsdm_train", "lmsys_55k", "lmsys_33k"):
        assert (artifacts / name / "rows.parquet").is_file()
        assert (artifacts / name / "manifest.json").is_file()
    train = pd.read_parquet(artifacts / "hard_label_set" / "train.parquet")
    assert len(train) > 0 and (artifacts / "hard_label_set" / "validation.parquet").is_file()
    # Only the selection ran: nothing downstream of the hard-label set, no other source.
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "hard_label_set",
        "lmsys_33k",
        "lmsys_55k",
        "wsdm_train",
    ]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("hard_label_set"))
        assert event is not None
        assert event.asset_materialization.metadata["train_rows"].value == len(train)
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS


@pytest.mark.slow
def test_unknown_run_config_key_is_rejected(demo_project: Path, tmp_path: Path) -> None:
    home = new_dagster_home(tmp_path / "home")
    artifacts = tmp_path / "artifacts"
    typo = {"ops": {"stage1_adapter": {"config": {"max_step": 10}}}}
    done = materialize("stage1_adapter", typo, arena_env(demo_project, artifacts, home))
    assert done.returncode != 0
    assert 'Received unexpected config entry "max_step" at path root:ops:stage1_adapter:config' in done.stderr
    assert "max_steps?" in done.stderr  # the message lists the fields that do exist
    assert not artifacts.exists()
