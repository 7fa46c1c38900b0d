"""The sample raw files: the published schemas, every awkward row kind, and all three scripts."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arena_assets.embedded import EmbeddedDefault
from arena_assets.embedded.sample_data import AWKWARD, LMSYS_33K_DUPLICATES, ROWS
from arena_assets.embedded.sources import LMSYS_COLUMNS, OPEN_COLUMNS, WSDM_TEST_COLUMNS, WSDM_TRAIN_COLUMNS
from arena_assets_tests.embedded.conftest import joined_turns

TEXT = ("prompt", "response_a", "response_b")
FILES_WITH_TEXT = ("wsdm_train", "wsdm_test", "lmsys_55k", "lmsys_33k", "open_v1", "open_v2", "open_v3")
LANGUAGE_NAMES = {"English", "Russian", "Chinese", "Japanese", "Spanish", "German", "French"}
SCRIPTS = {
    "latin": re.compile(r"[A-Za-zÀ-ÿ]"),
    "cyrillic": re.compile(r"[\u0400-\u04FF]"),
    "han": re.compile(r"[\u4E00-\u9FFF]"),
    "kana": re.compile(r"[\u3040-\u30FF]"),
}


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _schema(path: object) -> dict[str, pa.DataType]:
    schema = pq.read_schema(path)
    return {name: schema.field(name).type for name in schema.names}


def _lmsys(embedded: EmbeddedDefault, key: str) -> pd.DataFrame:
    return pd.read_csv(embedded.files[key])


def _texts(embedded: EmbeddedDefault, key: str) -> pd.DataFrame:
    """The file's prompt and responses as plain text (LMSYS turns joined)."""
    if key.startswith("lmsys"):
        frame = _lmsys(embedded, key)
        return pd.DataFrame({c: frame[c].map(joined_turns) for c in TEXT})
    return pd.read_parquet(embedded.files[key])[list(TEXT)]


def test_wsdm_train_schema(embedded: EmbeddedDefault) -> None:
    schema = _schema(embedded.files["wsdm_train"])
    assert tuple(schema) == WSDM_TRAIN_COLUMNS
    assert all(_is_text(typ) for typ in schema.values())
    frame = pd.read_parquet(embedded.files["wsdm_train"])
    assert len(frame) == ROWS["wsdm_train"]
    assert frame["id"].is_unique
    assert set(frame["winner"]) == {"model_a", "model_b"}
    assert set(frame["language"]) == LANGUAGE_NAMES
    assert (frame["model_a"] != frame["model_b"]).all()


def test_wsdm_test_schema_and_demo_labels(embedded: EmbeddedDefault) -> None:
    schema = _schema(embedded.files["wsdm_test"])
    assert tuple(schema) == WSDM_TEST_COLUMNS
    assert pa.types.is_int64(schema["id"]) and pa.types.is_boolean(schema["scored"])
    assert all(_is_text(schema[c]) for c in TEXT)
    test = pd.read_parquet(embedded.files["wsdm_test"])
    labels = pd.read_parquet(embedded.files["wsdm_test_labels"])
    assert len(test) == ROWS["wsdm_test"] and test["id"].is_unique
    assert list(labels.columns) == ["id", "winner"]
    assert labels["id"].tolist() == test["id"].tolist()
    assert set(labels["winner"]) == {"model_a", "model_b"}
    assert 0 < (~test["scored"]).sum() < len(test)


@pytest.mark.parametrize("key", ["lmsys_55k", "lmsys_33k"])
def test_lmsys_schema(embedded: EmbeddedDefault, key: str) -> None:
    frame = _lmsys(embedded, key)
    assert tuple(frame.columns) == LMSYS_COLUMNS
    assert frame["id"].dtype == "int64" and frame["id"].is_unique
    winners = frame[["winner_model_a", "winner_model_b", "winner_tie"]]
    assert (winners.dtypes == "int64").all()
    assert (winners.sum(axis=1) == 1).all()  # one-hot
    for column in TEXT:
        for cell in frame[column]:
            turns = json.loads(cell)
            assert isinstance(turns, list) and turns
            assert all(turn is None or isinstance(turn, str) for turn in turns)
    lengths = frame[list(TEXT)].map(lambda cell: len(json.loads(cell)))
    assert (lengths.nunique(axis=1) == 1).all()  # as many response turns as prompt turns


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_open_model_pairs_schema(embedded: EmbeddedDefault, version: str) -> None:
    schema = _schema(embedded.files[f"open_{version}"])
    assert tuple(schema) == OPEN_COLUMNS  # no winner column: the label is hidden
    assert all(_is_text(typ) for typ in schema.values())
    assert pq.read_metadata(embedded.files[f"open_{version}"]).num_rows == ROWS[f"open_{version}"]


def test_ids_unique_across_lmsys_files(embedded: EmbeddedDefault) -> None:
    ids = pd.concat([_lmsys(embedded, "lmsys_55k")["id"], _lmsys(embedded, "lmsys_33k")["id"]])
    assert ids.is_unique


def test_lmsys_awkward_rows(embedded: EmbeddedDefault) -> None:
    for key in ("lmsys_55k", "lmsys_33k"):
        frame = _lmsys(embedded, key)
        turns = frame[list(TEXT)].map(json.loads)
        assert frame["winner_tie"].sum() >= 5, key
        assert (turns["prompt"].map(len) > 1).sum() >= 5, key
        has_null = turns[["response_a", "response_b"]].map(lambda t: None in t).any(axis=1)
        assert has_null.sum() >= 3, key
        empty = turns[["response_a", "response_b"]].map(lambda t: t == [""]).any(axis=1)
        assert empty.sum() >= 3, key
        assert frame["response_a"].str.contains("\\u", regex=False).any(), key  # JSON escapes non-ASCII
        assert frame["response_a"].str.contains("[А-я]").any(), key  # and rows written as UTF-8


def test_33k_duplicates_55k_by_content(embedded: EmbeddedDefault) -> None:
    content = list(TEXT)
    big, small = _lmsys(embedded, "lmsys_55k"), _lmsys(embedded, "lmsys_33k")
    shared = small.merge(big, on=content, suffixes=("_33k", "_55k"))
    assert len(shared) == LMSYS_33K_DUPLICATES
    assert (shared["id_33k"] != shared["id_55k"]).all()


@pytest.mark.parametrize("key", FILES_WITH_TEXT)
def test_identical_and_long_rows_in_every_file(embedded: EmbeddedDefault, key: str) -> None:
    texts = _texts(embedded, key)
    identical = (texts["response_a"] == texts["response_b"]) & (texts["response_a"] != "")
    assert identical.sum() >= 2
    # 2,000+ words: over 3,000 characters even in Chinese, where a word is about 2 characters; every
    # other response is 20-80 words a turn, under 2,500 characters with three turns joined.
    longest = texts[["response_a", "response_b"]].map(len).max(axis=1)
    assert (longest > 3000).sum() >= 2
    assert longest[longest <= 3000].max() < 2500


def test_wsdm_train_repeats_some_prompts(embedded: EmbeddedDefault) -> None:
    prompts = pd.read_parquet(embedded.files["wsdm_train"])["prompt"]
    assert prompts.duplicated().sum() >= round(AWKWARD["wsdm_train"]["repeated_prompt"] * len(prompts)) * 0.8


@pytest.mark.parametrize("key", FILES_WITH_TEXT)
def test_every_file_mixes_latin_cyrillic_and_cjk(embedded: EmbeddedDefault, key: str) -> None:
    texts = _texts(embedded, key)
    blob = "\n".join(texts["response_a"]) + "\n".join(texts["prompt"])
    for script, pattern in SCRIPTS.items():
        assert pattern.search(blob), f"{key} has no {script} text"
