"""Helpers for the Dagster-level tests: the graph's assets and checks, demo resources, small run configs."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import dagster as dg

from arena_assets.definitions import defs
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
# A few optimizer steps on small batches: the test is about the plumbing; learning is tested in ranker/.
# Learning rates near zero keep both stages at the backbone's accuracy: after a few dozen steps both sit at
# chance, and stage2_not_worse_than_stage1 (tolerance 0.02 on the validation rows) would be a coin flip.
SMALL_TRAIN = {
    "max_validation_rows": 48,
    "max_steps": 12,
    "global_batch_size": 8,
    "per_device_batch_size": 8,
    "log_every_steps": 3,
    "lr_lora_a": 1e-7,
    "lr_lora_b": 1e-7,
}
SMALL_RUN_CONFIG: dict[str, Any] = {
    "ops": {"stage1_adapter": {"config": SMALL_TRAIN}, "stage2_adapter": {"config": SMALL_TRAIN}},
}


def graph_assets() -> list[dg.AssetsDefinition]:
    """Every asset of the one Definitions (automation conditions included)."""
    return list(defs.assets or [])


def graph_checks() -> list[dg.AssetChecksDefinition]:
    """Every asset check of the one Definitions."""
    return list(defs.asset_checks or [])


def settings_resource(project: Path, artifact_root: Path) -> ArenaSettingsResource:
    """Demo settings on `project`'s embedded default, writing under `artifact_root`."""
    return ArenaSettingsResource(
        profile="demo",
        backbone=str(project / "data/embedded/tiny-qwen2"),
        raw_dir=str(project / "data/raw/demo"),
        artifact_root=str(artifact_root),
    )


def demo_resources(project: Path, artifact_root: Path) -> dict[str, Any]:
    """The resources a whole-graph run needs, on the CPU."""
    return {
        "settings": settings_resource(project, artifact_root),
        "launcher": AccelerateLauncher(cpu=True),
    }


def resolved(project: Path, artifact_root: Path) -> Settings:
    """The Settings the assets see under `settings_resource(project, artifact_root)`."""
    return settings_resource(project, artifact_root).settings()


def arena_env(project: Path, artifact_root: Path, dagster_home: Path) -> dict[str, str]:
    """Environment for a Dagster subprocess: demo settings on `project`, its own home, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
    env.update(
        {
            "ARENA_PROFILE": "demo",
            "ARENA_RAW_DIR": str(project / "data/raw/demo"),
            "ARENA_BACKBONE": str(project / "data/embedded/tiny-qwen2"),
            "ARENA_ARTIFACT_ROOT": str(artifact_root),
            "DAGSTER_HOME": str(dagster_home),
        }
    )
    return env


def new_dagster_home(path: Path) -> Path:
    """A Dagster home with telemetry off and the project's pool limit."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
    )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def materialize_data(
    project: Path,
    artifact_root: Path,
    instance: dg.DagsterInstance,
    targets: tuple[str, ...] = ("hard_label_set",),
) -> dg.ExecuteInProcessResult:
    """Materialize `targets`, everything upstream of them, and their checks (seconds for the data group)."""
    return dg.materialize(
        [*graph_assets(), *graph_checks()],
        selection=dg.AssetSelection.assets(*targets).upstream(),
        resources=demo_resources(project, artifact_root),
        instance=instance,
    )
