"""The UI's server: `dagster-webserver -w workspace.yaml` serves the graph, lineage and latest metadata.

The webserver runs in its own session on a free port with a temporary home in which this test first
materialized the data group; it is stopped by signalling its process group, and nothing of it may remain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from arena_assets_tests.assets.test_definitions import GRAPH
from arena_assets_tests.demo_graph import (
    REPO_ROOT,
    arena_env,
    free_port,
    materialize_data,
    new_dagster_home,
)

WEBSERVER = str(Path(sys.executable).with_name("dagster-webserver"))
STARTUP_SECONDS = 180  # importing Dagster and the code location on two busy cores
ASSETS_QUERY = """
{ assetNodes { assetKey { path } dependencyKeys { path }
    assetMaterializations(limit: 1) { runId
      metadataEntries { label
        ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } } } } }
"""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def stop_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after `grace` seconds; wait until it is gone."""
    pgid = process.pid  # the session leader's pid is its group id
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()  # reap the webserver itself
            if not group_members(pgid):
                break
            time.sleep(0.2)
        if not group_members(pgid):
            break
    process.wait(timeout=10)


def get(url: str, *, body: dict | None = None, timeout: float = 30.0) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for_assets(base: str, process: subprocess.Popen, log: Path) -> list[dict]:
    """Poll /server_info, then /graphql until the code location has loaded its assets."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"webserver exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        )
        try:
            get(f"{base}/server_info", timeout=5)
            nodes = get(f"{base}/graphql", body={"query": ASSETS_QUERY})["data"]["assetNodes"]
            if nodes:
                return nodes
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise AssertionError(
        f"no assets from the webserver after {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture
def home_with_data(
    demo_project: Path, tmp_path: Path
) -> Iterator[tuple[Path, dg.ExecuteInProcessResult, Path]]:
    """A Dagster home holding one run of the data group (raw datasets, hard-label set and its checks)."""
    home = new_dagster_home(tmp_path / "home")
    artifacts = tmp_path / "artifacts"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = materialize_data(demo_project, artifacts, instance)
    assert result.success
    yield home, result, artifacts


@pytest.mark.slow
def test_webserver_serves_graph_lineage_and_metadata(
    home_with_data, demo_project: Path, tmp_path: Path
) -> None:
    home, result, artifacts = home_with_data
    port = free_port()
    log = tmp_path / "webserver.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [WEBSERVER, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=arena_env(demo_project, artifacts, home),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        nodes = wait_for_assets(f"http://127.0.0.1:{port}", process, log)
        by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert set(by_name) == set(GRAPH)
        lineage = {
            name: {"/".join(d["path"]) for d in node["dependencyKeys"]} for name, node in by_name.items()
        }
        assert lineage == {name: parents for name, (_, parents) in GRAPH.items()}

        (latest,) = by_name["hard_label_set"]["assetMaterializations"]
        assert latest["runId"] == result.run_id
        served = {e["label"]: e.get("intValue", e.get("floatValue")) for e in latest["metadataEntries"]}
        (materialization,) = [
            m
            for m in result.get_asset_materialization_events()
            if m.asset_key == dg.AssetKey("hard_label_set")
        ]
        expected = materialization.materialization.metadata
        for label in ("train_rows", "validation_rows", "rows_dropped", "dropped_duplicate"):
            assert served[label] == expected[label].value, label
        assert served["label_share_b"] == pytest.approx(expected["label_share_b"].value)
        assert by_name["stage1_adapter"]["assetMaterializations"] == []  # never built in this home
    finally:
        stop_group(process)
    assert group_members(process.pid) == [], "webserver processes left behind"
