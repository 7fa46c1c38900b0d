"""Artifacts written atomically: a temporary sibling directory renamed into place, plus a manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Files the entry points write into their output directories.
MANIFEST_NAME = "manifest.json"  # every artifact: config, its hash, code version, input versions
METRICS_NAME = "metrics.json"  # trainer and scorer: the figures they reported
PARITY_NAME = "parity.json"  # merger: the probe comparison of merged and adapter model
LOGITS_NAME = "logits.parquet"  # scorer: id and the letter logits of both orders, these columns:
LOGIT_COLUMNS = ("a_logit", "b_logit", "a_logit_swapped", "b_logit_swapped")
STAGE2_NAME = "stage2.parquet"  # soft_labels: the stage-2 training rows
REPORT_NAME = "report.json"  # evaluation: metrics overall, per language, per source
SUBMISSION_NAME = "submission.csv"  # Kaggle format: id,winner
TMP_MARK = ".tmp-"  # a sibling being written; never a finished artifact


@contextmanager
def atomic_directory(final_dir: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final_dir`; on success replace `final_dir` with it.

    A crash leaves only a `.tmp-<pid>-*` sibling, never a half-written `final_dir`; a later writer removes
    it once that pid is gone. Two writers of one directory never touch each other's temporary directory,
    and their swaps take turns under a lock, so the last to finish wins whole.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(final_dir)
    tmp = final_dir.parent / f"{final_dir.name}{TMP_MARK}{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with _locked(final_dir):
        old = final_dir.parent / f"{final_dir.name}{TMP_MARK}{os.getpid()}-old-{time.time_ns()}"
        if final_dir.exists():
            final_dir.rename(old)
        tmp.rename(final_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _locked(final_dir: Path) -> Iterator[None]:
    """An exclusive lock for swapping `final_dir`: its parent directory, so no lock file is left about."""
    import fcntl

    descriptor = os.open(final_dir.parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _remove_abandoned(final_dir: Path) -> None:
    """Remove temporary siblings of `final_dir` whose writing process has ended (a crash or a kill)."""
    for sibling in final_dir.parent.glob(f"{final_dir.name}{TMP_MARK}*"):
        owner = sibling.name[len(final_dir.name) + len(TMP_MARK) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(sibling, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{time.time_ns()}")
    tmp.write_text(text)
    tmp.replace(path)


def atomic_write_parquet(frame: Any, path: Path) -> None:
    """Write a pandas frame to parquet through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{time.time_ns()}")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Content hash of one file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(directory: str | Path) -> str:
    """A short id of a model or adapter directory that changes when its contents do.

    This project's artifacts carry a manifest (their config and inputs), so its hash names them. Any other
    model directory (a downloaded backbone) is named by its config.json and its files' names and sizes:
    hashing tens of GB of weights on every run would cost minutes.
    """
    directory = Path(directory)
    manifest = directory / MANIFEST_NAME
    if manifest.is_file():
        return file_sha256(manifest)[:16]
    digest = hashlib.sha256()
    config = directory / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for path in sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else ():
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def source_version(*paths: Path) -> str:
    """A short hash of Python source: the files given, and every .py file under the directories given."""
    digest = hashlib.sha256()
    files = sorted(f for p in paths for f in ([p] if p.is_file() else Path(p).rglob("*.py")))
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


RANKER_DIR = Path(__file__).resolve().parent


def ranker_code_version() -> str:
    """The version of the ranker's code: a hash of its modules' source."""
    return source_version(RANKER_DIR)


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-serialisable config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version() -> str:
    """The git commit of the working tree (with `+dirty` when it has changes), or `unknown` outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "arena_assets"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def write_manifest(
    directory: Path, *, config: Mapping[str, Any], inputs: Mapping[str, str], extra: Mapping[str, Any] = ()
) -> dict[str, Any]:
    """Write `manifest.json` (config, its hash, code version, input versions) into `directory`."""
    manifest = {
        "config": dict(config),
        "config_hash": config_hash(config),
        "code_version": code_version(),
        "inputs": dict(inputs),
        "created_unix": time.time(),
        **dict(extra),
    }
    atomic_write_text(Path(directory) / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str))
    return manifest


def directory_size_bytes(directory: Path) -> int:
    """Total size of the files under `directory`."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
