"""Row builders for tiny raw files in each published layout."""

from __future__ import annotations

import json
from typing import Any


def turns(*items: str | None) -> str:
    """One LMSYS text field: a JSON list of turns."""
    return json.dumps(list(items), ensure_ascii=False)


def wsdm_row(i: int, **kw: Any) -> dict[str, Any]:
    """A usable WSDM train row; keywords override fields."""
    row = {
        "id": f"w{i}",
        "prompt": f"prompt {i}",
        "response_a": f"answer a {i}",
        "response_b": f"answer b {i}",
        "winner": "model_a" if i % 2 else "model_b",
        "model_a": "gpt-4",
        "model_b": "llama",
        "language": "English",
    }
    return row | kw


def wsdm_test_row(i: int, **kw: Any) -> dict[str, Any]:
    """A WSDM test row; keywords override fields."""
    row = {"id": i, "prompt": f"q {i}", "response_a": f"a {i}", "response_b": f"b {i}", "scored": i % 2 == 0}
    return row | kw


def lmsys_row(i: int, label: str = "a", **kw: Any) -> dict[str, Any]:
    """A usable LMSYS row with a one-hot label ('a', 'b' or 'tie'); keywords override fields."""
    row = {
        "id": 1000 + i,
        "model_a": "gpt-4",
        "model_b": "claude",
        "prompt": turns(f"question {i}"),
        "response_a": turns(f"reply a {i}"),
        "response_b": turns(f"reply b {i}"),
        "winner_model_a": int(label == "a"),
        "winner_model_b": int(label == "b"),
        "winner_tie": int(label == "tie"),
    }
    return row | kw


def open_row(i: int, **kw: Any) -> dict[str, Any]:
    """A usable open-model pair row; keywords override fields."""
    row = {
        "id": i,
        "prompt": f"open prompt {i}",
        "response_a": f"open a {i}",
        "response_b": f"open b {i}",
        "model_a": "qwen",
        "model_b": "gemma",
        "language": "Chinese",
    }
    return row | kw
