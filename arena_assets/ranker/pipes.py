"""Rank-0 Dagster Pipes reporter for the ranker's entry points; a plain logger when run standalone.

The ranker also runs from a shell on GPU machines without Dagster, so this module imports nothing from
`dagster` and imports `dagster_pipes` only when the process was launched through Pipes (on rank 0).

    with pipes_reporter(is_main_process=accelerator.is_main_process) as reporter:
        reporter.info("training")
        reporter.report_materialization({"val_accuracy": 0.71, "adapter_dir": path_value(out)})
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from os import PathLike, environ
from typing import Any, Literal

logger = logging.getLogger(__name__)

# Equal to dagster_pipes.DAGSTER_PIPES_CONTEXT_ENV_VAR (a test asserts it); spelled out so that deciding
# whether Pipes is active never needs the package.
PIPES_CONTEXT_ENV_VAR = "DAGSTER_PIPES_CONTEXT"

Severity = Literal["ERROR", "WARN"]

# Checks an entry point computes and reports; the Dagster asset declares each in its check_specs.
PARITY_CHECK = "merged_model_matches_adapter"  # merger: merged model == adapter model on a probe
_SUMMARY_WIDTH = 80

_opened = False


def md(text: str) -> dict[str, Any]:
    """Markdown metadata value."""
    return {"raw_value": text, "type": "md"}


def path_value(path: str | PathLike[str]) -> dict[str, Any]:
    """Filesystem path metadata value."""
    return {"raw_value": str(path), "type": "path"}


def url_value(url: str) -> dict[str, Any]:
    """URL metadata value."""
    return {"raw_value": url, "type": "url"}


def readable(metadata: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    """Metadata as a person reads it: floats to `digits` significant digits, and the figures compared across
    runs first (validation metrics, then throughput), diagnostics after."""

    def rank(key: str) -> int:
        return 0 if key.startswith("val_") else 1 if "per_second" in key or key == "test_accuracy" else 2

    out = {}
    for key in sorted(metadata, key=rank):  # stable: each group keeps its order
        value = metadata[key]
        if isinstance(value, float) and math.isfinite(value):
            value = float(f"{value:.{digits}g}")
        out[key] = value
    return out


def launched_by_pipes() -> bool:
    """Whether Dagster Pipes started this process (its context variable is in the environment)."""
    return PIPES_CONTEXT_ENV_VAR in environ


class Reporter:
    """Logs and results of one entry point: forwarded to Dagster on the Pipes rank, else printed."""

    def __init__(self, *, pipes: Any = None, is_main_process: bool = True) -> None:
        self._pipes = pipes
        self._main = is_main_process

    def info(self, msg: str) -> None:
        """Progress message; other ranks stay quiet (debug level)."""
        if not self._main:
            logger.debug(msg)
            return
        _emit(logging.INFO, msg)
        if self._pipes is not None:
            self._pipes.log.info(msg)

    def warning(self, msg: str) -> None:
        """Warning; every rank logs it locally, rank 0 also forwards it."""
        _emit(logging.WARNING, msg)
        if self._pipes is not None:
            self._pipes.log.warning(msg)

    def report_materialization(self, metadata: Mapping[str, Any], *, data_version: str | None = None) -> None:
        """Report the materialization: numbers, strings, or md()/path_value()/url_value() values."""
        if not self._main:
            return
        metadata = readable(metadata)
        if self._pipes is not None:
            self._pipes.report_asset_materialization(metadata=metadata, data_version=data_version)
        _emit(logging.INFO, "materialization: " + _summary(metadata))

    def report_check(
        self,
        check_name: str,
        *,
        passed: bool,
        metadata: Mapping[str, Any] | None = None,
        severity: Severity = "ERROR",
    ) -> None:
        """Report an asset check result; the check must be declared in the asset's `check_specs`."""
        if not self._main:
            return
        if self._pipes is not None:
            self._pipes.report_asset_check(
                check_name, passed=passed, severity=severity, metadata=dict(metadata) if metadata else None
            )
        status = "passed" if passed else f"FAILED ({severity})"
        _emit(logging.INFO, f"check {check_name} {status}: {_summary(metadata or {})}")


@contextmanager
def pipes_reporter(*, is_main_process: bool) -> Iterator[Reporter]:
    """Open Dagster Pipes once, on the main process of a Pipes launch; yield a Reporter either way.

    An exception from the body is sent to Dagster with the closing message and then propagates.

    Args:
        is_main_process: True on global rank 0 (`accelerator.is_main_process`); other ranks never open Pipes.
    """
    if not (is_main_process and launched_by_pipes()):
        yield Reporter(is_main_process=is_main_process)
        return
    global _opened
    # The Pipes context is a per-process singleton that cannot be reopened after close (dagster #22094).
    if _opened:
        raise RuntimeError("pipes_reporter opened twice in this process: open it once, at the entry point")
    _opened = True
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        yield Reporter(pipes=pipes, is_main_process=True)


def _emit(level: int, msg: str) -> None:
    # An entry point that configured logging (at this level) gets records; a bare shell run still sees the
    # line on stdout.
    if logger.hasHandlers() and logger.isEnabledFor(level):
        logger.log(level, msg)
    else:
        stream = sys.stdout if level < logging.WARNING else sys.stderr
        print(f"[{logging.getLevelName(level).lower()}] {msg}", file=stream, flush=True)


def _summary(metadata: Mapping[str, Any]) -> str:
    """`key=value, ...` on one line, long values shortened."""
    parts = []
    for key, value in metadata.items():
        raw = value.get("raw_value") if isinstance(value, Mapping) and "raw_value" in value else value
        if isinstance(raw, float):
            text = f"{raw:.4g}"
        elif isinstance(raw, str):
            text = raw.splitlines()[0] if raw else ""
        else:
            text = json.dumps(raw, default=str)
        parts.append(f"{key}={text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 3] + '...'}")
    return ", ".join(parts)
