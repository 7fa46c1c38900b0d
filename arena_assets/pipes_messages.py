"""The Pipes message reader the launcher uses: the child's messages from a temporary file, whole lines only.

Dagster's file reader (1.13) tails the file with `readline()`, which also returns a line the child is still
writing. The child's writer appends each message with one buffered `write`. A message longer than the 8 KiB
buffer (a materialization whose metadata carries the inline SVG plots) reaches the file in two system calls,
and a read between them fails `json.loads` with "Unterminated string", failing a step whose child succeeded.
This reader holds a partial line until its newline arrives.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_pipes import PipesDefaultMessageWriter

POLL_SECONDS = 0.01


def complete_lines(path: Path, should_stop: Callable[[], bool]) -> Iterator[str]:
    """Lines appended to `path`, each once it ends with a newline, until `should_stop()` and nothing is left.

    Raises ValueError if the file ends in a line without its newline (a writer that died mid-message).
    """
    pending = ""
    with open(path, encoding="utf-8") as stream:
        while True:
            chunk = stream.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    yield pending
                    pending = ""
            elif should_stop():
                break
            else:
                time.sleep(POLL_SECONDS)
    if pending:
        raise ValueError(f"{path}: the last Pipes message has no end ({len(pending)} characters); "
                         "the child stopped while writing it")


class WholeLineMessageReader(dg.PipesMessageReader):
    """Reads the child's Pipes messages from a temporary file, one complete line at a time."""

    @contextmanager
    def read_messages(self, handler: Any) -> Iterator[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "messages"
            path.touch()
            closed = threading.Event()
            thread = threading.Thread(target=self._read, args=(path, handler, closed), daemon=True)
            thread.start()
            try:
                yield {
                    PipesDefaultMessageWriter.FILE_PATH_KEY: str(path),
                    PipesDefaultMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: False,
                }
            finally:
                closed.set()
                thread.join()

    def _read(self, path: Path, handler: Any, closed: threading.Event) -> None:
        try:
            for line in complete_lines(path, closed.is_set):
                handler.handle_message(json.loads(line))
        except Exception:
            handler.report_pipes_framework_exception(f"{type(self).__name__} reader thread", sys.exc_info())
            raise

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a temporary file (WholeLineMessageReader)."
