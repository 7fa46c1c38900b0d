"""Artifacts written atomically: concurrent writers of one directory, and what a killed writer leaves."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from arena_assets.ranker.artifacts import TMP_MARK, atomic_directory


def test_concurrent_writers_of_one_directory_both_succeed_and_one_wins_whole(tmp_path: Path) -> None:
    final = tmp_path / "artifact"
    errors: list[BaseException] = []
    started = threading.Barrier(6)

    def write(name: str) -> None:
        try:
            with atomic_directory(final) as tmp:
                started.wait()  # six writing at once: a sweep of "stale" siblings would hit the others
                (tmp / "writer").write_text(name)
                time.sleep(0.05)
                (tmp / "done").write_text(name)
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert (final / "writer").read_text() == (final / "done").read_text()  # one writer's files, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]  # no temporary left behind


def test_a_dead_writers_temporary_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    final = tmp_path / "artifact"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    abandoned = tmp_path / f"artifact{TMP_MARK}{dead.stdout.strip()}-1"
    live = tmp_path / f"artifact{TMP_MARK}{os.getppid()}-1"  # another live process is still writing
    abandoned.mkdir()
    live.mkdir()

    with atomic_directory(final) as tmp:
        (tmp / "x").write_text("1")

    assert not abandoned.exists() and live.is_dir() and (final / "x").is_file()
