"""The launcher's Pipes reader takes a message only once its whole line is in the file: a long message that
reaches the file in two writes (as the child's 8 KiB-buffered writer makes it) arrives once, intact."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dagster_pipes import PipesDefaultMessageWriter

from arena_assets.pipes_messages import WholeLineMessageReader, complete_lines


class Handler:
    """What the reader calls: the messages it handed on and the exceptions it reported."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def handle_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def report_pipes_framework_exception(self, origin: str, exc_info: Any) -> None:
        self.errors.append(f"{origin}: {exc_info[1]}")


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(text)


def test_a_message_written_in_two_parts_arrives_once_and_whole() -> None:
    long = {"method": "report_asset_materialization", "params": {"plot": "x" * 20_000}}
    line = json.dumps(long) + "\n"
    short = {"method": "log", "params": {"message": "step 1"}}
    handler = Handler()
    with WholeLineMessageReader().read_messages(handler) as params:
        path = Path(params[PipesDefaultMessageWriter.FILE_PATH_KEY])
        _append(path, json.dumps(short) + "\n" + line[:8192])  # the first write of the long message
        time.sleep(0.2)  # the reader polls every 10 ms: it has seen the half line by now
        assert handler.messages == [short] and not handler.errors
        _append(path, line[8192:])
    assert handler.messages == [short, long] and not handler.errors


def test_a_message_cut_off_by_a_dead_writer_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text('{"method": "log"}\n{"method": "rep')
    stop = threading.Event()
    stop.set()
    lines = complete_lines(path, stop.is_set)
    assert next(lines) == '{"method": "log"}\n'
    with pytest.raises(ValueError, match="has no end"):
        next(lines)
