"""Screenshots of the Dagster UI for the README: the asset lineage and one asset's metadata.

Run after `make demo` (the screenshots show its run, from the project's Dagster home):

    make screenshots
    # which runs: DAGSTER_HOME=$PWD/.dagster_home .venv/bin/python scripts/screenshots.py

Needs Debian's Chromium and the `playwright` package (no browser download):

    apt-get install -y chromium
    .venv/bin/pip install -e '.[screenshots]'

Starts `dagster-webserver -w workspace.yaml` on a free 127.0.0.1 port in its own session, drives headless
Chromium through Playwright, writes docs/asset-graph.png (the lineage, groups expanded),
docs/asset-metadata.png (stage1_adapter's latest metadata), docs/asset-loss-curve.png (its loss curve),
docs/evaluation-metadata.png and docs/evaluation-reliability.png (the evaluation report and its reliability
plot), and stops the webserver's whole process group. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_SECONDS = 180
GRAPH_VIEWPORT = {"width": 1600, "height": 1050}
METADATA_VIEWPORT = {"width": 1600, "height": 1680}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_loaded(base: str, process: subprocess.Popen, log: Path) -> None:
    """Until /graphql lists the code location's assets (the webserver answers before the location loads)."""
    query = json.dumps({"query": "{ assetNodes { id } }"}).encode()
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"dagster-webserver exited with {process.returncode}; see {log}")
        try:
            request = urllib.request.Request(
                f"{base}/graphql", data=query, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                if json.loads(response.read())["data"]["assetNodes"]:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
            pass
        time.sleep(1.0)
    sys.exit(f"dagster-webserver did not load the code location in {STARTUP_SECONDS} s; see {log}")


def stop_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the webserver's process group (it and its code server); SIGKILL what outlives `grace`."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        process.poll()  # reap the webserver, so that it no longer counts as a member
        try:
            os.killpg(process.pid, 0)  # raises once no process of the group is left
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def skip_community_dialog(page: Page) -> None:
    """The 'Join the Dagster community' dialog covers every page on a first visit; skip it if it shows."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=8000)
    except Exception:  # noqa: BLE001 - not shown (already dismissed for this home): nothing to do
        return
    skip.click()
    page.wait_for_timeout(500)


def asset_graph(page: Page, base: str, out: Path) -> None:
    """The global lineage with every group expanded, sidebar hidden, fitted to the window."""
    page.goto(f"{base}/asset-groups")
    page.get_by_text("Global asset lineage").first.wait_for()
    skip_community_dialog(page)
    # The unlabelled button right of "Jump to..." folds the group tree away; then the left navigation.
    page.get_by_placeholder("Jump to").locator("xpath=following::button[1]").click()
    page.get_by_role("button", name="Hide navigation").click()
    page.wait_for_timeout(1500)
    canvas = page.locator("svg").last.bounding_box() or {"x": 900, "y": 300}
    page.mouse.click(canvas["x"] + 40, canvas["y"] + 40, button="right")
    # The context menu is rendered twice (one copy hidden): click the visible one.
    page.locator("text=Expand all groups >> visible=true").first.click()
    page.wait_for_timeout(1500)
    # A double click on the background fits the graph to the (now wider) window.
    page.mouse.dblclick(canvas["x"] + 20, canvas["y"] + 20)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(out))


def asset_metadata(page: Page, base: str, asset: str, out: Path) -> None:
    """An asset's overview page: its latest materialization's metadata."""
    page.set_viewport_size(METADATA_VIEWPORT)  # tall enough for the whole metadata table and loss curve
    page.goto(f"{base}/assets/{asset}")
    page.get_by_text(asset).first.wait_for()
    skip_community_dialog(page)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(out))


def markdown_image(page: Page, key: str, out: Path) -> None:
    """A metadata entry that is markdown with an inline image (a plot), of the asset page that is open."""
    page.get_by_role("row").filter(has_text=key).get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("img").first.wait_for()
    page.wait_for_timeout(1000)
    dialog.screenshot(path=str(out))
    page.keyboard.press("Escape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--asset", default="stage1_adapter", help="a trained adapter (it has a loss curve)")
    args = parser.parse_args()

    home = Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / ".dagster_home"))
    if not (home / "history").is_dir():
        sys.exit(f"{home} holds no runs: run `make demo` first")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.gettempdir()) / f"arena-screenshots-webserver-{port}.log"
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_loaded(base, process, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport=GRAPH_VIEWPORT, device_scale_factor=1.5)
            asset_graph(page, base, args.out / "asset-graph.png")
            asset_metadata(page, base, args.asset, args.out / "asset-metadata.png")
            markdown_image(page, "loss_curve", args.out / "asset-loss-curve.png")
            asset_metadata(page, base, "evaluation", args.out / "evaluation-metadata.png")
            markdown_image(page, "reliability", args.out / "evaluation-reliability.png")
            browser.close()
    finally:
        stop_group(process)
    print(f"wrote the asset graph, {args.asset}'s and evaluation's metadata and plots to {args.out}")


if __name__ == "__main__":
    main()
