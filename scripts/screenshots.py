"""Screenshots of the Dagster UI for the README: the asset lineage and one asset's metadata.

Run after `make demo` (the screenshots show its run, from the project's Dagster home):

    make screenshots
    # which runs: DAGSTER_HOME=$PWD/.dagster_home .venv/bin/python scripts/screenshots.py

Needs Debian's Chromium and the `playwright` package (no browser download):

    apt-get install -y chromium
    .venv/bin/pip install -e '.[screenshots]'

Starts `dagster-webserver -w workspace.yaml` on a free 127.0.0.1 port in its own session, drives headless
Chromium through Playwright, writes docs/asset-graph.png and docs/asset-metadata.png, and stops the
webserver's whole process group. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
STARTUP_SECONDS = 180


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
            request = urllib.request.Request(f"{base}/graphql", data=query,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                if json.loads(response.read())["data"]["assetNodes"]:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
            pass
        time.sleep(1.0)
    sys.exit(f"dagster-webserver did not load the code location in {STARTUP_SECONDS} s; see {log}")


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
    page.get_by_role("button", name="Hide navigation").click()
    page.wait_for_timeout(1500)
    canvas = page.locator("svg").last.bounding_box() or {"x": 900, "y": 300}
    page.mouse.click(canvas["x"] + 40, canvas["y"] + 40, button="right")
    page.get_by_text("Expand all groups").first.click()
    page.wait_for_timeout(3000)
    page.screenshot(path=str(out))


def asset_metadata(page: Page, base: str, asset: str, out: Path) -> None:
    """An asset's overview page: its latest materialization's metadata."""
    page.goto(f"{base}/assets/{asset}")
    page.get_by_text(asset).first.wait_for()
    skip_community_dialog(page)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(out), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--asset", default="stage1_adapter", help="asset whose metadata page is shot")
    args = parser.parse_args()

    home = Path(os.environ.get("DAGSTER_HOME", REPO_ROOT / ".dagster_home"))
    if not (home / "history").is_dir():
        sys.exit(f"{home} holds no runs: run `make demo` first")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = home / "screenshots-webserver.log"
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_loaded(base, process, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000}, device_scale_factor=1.5)
            asset_graph(page, base, args.out / "asset-graph.png")
            asset_metadata(page, base, args.asset, args.out / "asset-metadata.png")
            browser.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the webserver and its code-location server
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    print(f"wrote {args.out / 'asset-graph.png'} and {args.out / 'asset-metadata.png'}")


if __name__ == "__main__":
    main()
