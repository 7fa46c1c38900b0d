"""Helpers for tests that run the Dagster graph: its assets and checks, demo resources, environments."""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from arena_assets.assets import layout
from arena_assets.definitions import defs
from arena_assets.resources import AccelerateLauncher, ArenaSettingsResource
from arena_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def materialize_command(select: str, run_config: dict[str, Any]) -> list[str]:
    """`dagster asset materialize` of `select` in the project's code location, as a user types it."""
    dagster = str(Path(sys.executable).with_name("dagster"))
    return [dagster, "asset", "materialize", "-m", "arena_assets.definitions", "--select", select,
            "--config-json", json.dumps(run_config)]  # fmt: skip


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


@dataclass(frozen=True)
class DemoRun:
    """One materialization of the whole graph on the embedded default: its result and where it wrote."""

    settings: Settings
    result: dg.ExecuteInProcessResult

    def metrics(self, asset: str) -> dict[str, Any]:
        """`metrics.json` of a training asset's adapter."""
        return json.loads((layout.model_dir(self.settings, asset) / layout.METRICS_NAME).read_text())

    def metadata(self, asset: str) -> dict[str, Any]:
        """The raw values of an asset's materialization metadata in this run."""
        (event,) = [
            e for e in self.result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
        ]
        return {k: v.value for k, v in event.materialization.metadata.items()}


def run_demo_graph(project: Path, artifact_root: Path) -> DemoRun:
    """Every asset and check materialized in this process with the demo recipe, as `make demo` runs them."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*graph_assets(), *graph_checks()],
            selection="*",
            resources=demo_resources(project, artifact_root),
            instance=instance,
            raise_on_error=False,
        )
    return DemoRun(settings=resolved(project, artifact_root), result=result)
