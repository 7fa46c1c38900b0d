"""WSDM train and test readers on tiny parquet files."""

from __future__ import annotations

import pandas as pd
import pytest

from arena_assets.readers import ReaderError, read_wsdm_test, read_wsdm_train
from arena_assets.readers.schema import CANONICAL_COLUMNS
from arena_assets_tests.readers.builders import wsdm_row, wsdm_test_row


def test_train_keeps_good_rows_and_counts_each_drop(write_parquet) -> None:
    rows = [
        wsdm_row(1, prompt="  Привет, как дела?\r\n", response_a="Хорошо!", response_b="Отлично."),
        wsdm_row(2, prompt="你好", response_a="你好！", response_b="您好。", language="Chinese"),
        wsdm_row(3, winner="tie"),
        wsdm_row(4, winner="model_c"),
        wsdm_row(5, winner=None),
        wsdm_row(6, response_a=None),
        wsdm_row(7, response_b=" \n\t "),
        wsdm_row(8, response_a="same  text", response_b="same\ntext "),
        wsdm_row(9, id="w1", prompt="other prompt"),  # repeated id
        wsdm_row(10, prompt="你好", response_a="你好！", response_b="您好。"),  # repeated content
        wsdm_row(11),
    ]
    result = read_wsdm_train(write_parquet("train.parquet", rows))

    assert list(result.frame.columns) == list(CANONICAL_COLUMNS)
    assert result.frame["id"].tolist() == ["w1", "w2", "w11"]
    assert result.rows_read == 11 and result.rows_kept == 3
    assert dict(+result.drops) == {
        "tie": 1,
        "bad_label": 2,
        "null_text": 1,
        "empty_text": 1,
        "identical_responses": 1,
        "duplicate": 2,
    }
    first = result.frame.iloc[0]
    assert first["prompt"] == "Привет, как дела?"  # stripped, Cyrillic intact
    assert (first["source"], first["winner"], first["language"]) == ("wsdm_train", "model_a", "English")
    assert result.frame.iloc[1][["prompt", "response_b", "winner"]].tolist() == ["你好", "您好。", "model_b"]


def test_train_finds_duplicates_across_files(write_parquet) -> None:
    first = write_parquet("a.parquet", [wsdm_row(1), wsdm_row(2)])
    second = write_parquet("b.parquet", [wsdm_row(3), wsdm_row(2, id="w9")])
    result = read_wsdm_train([first, second])
    assert result.frame["id"].tolist() == ["w1", "w2", "w3"]
    assert result.drops["duplicate"] == 1
    assert result.files == [first, second]


def test_train_integer_ids_become_strings(write_parquet) -> None:
    result = read_wsdm_train(write_parquet("train.parquet", [wsdm_row(1, id=7), wsdm_row(2, id=8)]))
    assert result.frame["id"].tolist() == ["7", "8"]


def test_train_summary_lists_every_reason(write_parquet) -> None:
    summary = read_wsdm_train(write_parquet("t.parquet", [wsdm_row(1), wsdm_row(2, winner="x")])).summary()
    assert summary["rows_read"] == 2 and summary["rows_kept"] == 1
    assert summary["drops"]["bad_label"] == 1 and summary["drops"]["tie"] == 0
    assert summary["notes"] == {}


def test_test_file_keeps_every_row_and_notes_odd_ones(write_parquet) -> None:
    rows = [
        wsdm_test_row(1, prompt="Что такое ИИ?"),
        wsdm_test_row(2, response_a=None),
        wsdm_test_row(3, response_b="   "),
        wsdm_test_row(4, response_a="same", response_b=" same"),
        wsdm_test_row(5, prompt="Что такое ИИ?", response_a="a 1", response_b="b 1"),
    ]
    result = read_wsdm_test(write_parquet("test.parquet", rows))

    frame = result.frame
    assert frame["id"].tolist() == ["1", "2", "3", "4", "5"]
    assert list(frame.columns) == [*CANONICAL_COLUMNS, "scored"]
    assert frame["scored"].tolist() == [False, True, False, True, False]
    assert frame["winner"].isna().all() and frame["language"].isna().all()
    assert frame.loc[1, "response_a"] == "" and frame.loc[2, "response_b"] == ""
    assert frame.loc[0, "prompt"] == "Что такое ИИ?"
    assert sum(result.drops.values()) == 0
    assert dict(result.notes) == {"null_text": 1, "empty_text": 1, "identical_responses": 1, "duplicate": 1}


def test_test_file_passes_language_through_when_present(write_parquet) -> None:
    rows = [wsdm_test_row(1, language="Japanese"), wsdm_test_row(2, language=None)]
    frame = read_wsdm_test(write_parquet("test.parquet", rows)).frame
    assert frame["language"].tolist()[0] == "Japanese" and pd.isna(frame["language"].iloc[1])


def test_test_file_repeated_id_is_an_error(write_parquet) -> None:
    path = write_parquet("test.parquet", [wsdm_test_row(1), wsdm_test_row(2), wsdm_test_row(1, prompt="x")])
    with pytest.raises(
        ReaderError, match=r"test\.parquet, column 'id', row 2: id '1' appears more than once"
    ):
        read_wsdm_test(path)


def _with_invalid_utf8(path, column: str, row: int) -> None:
    """Rewrite `column` of `path` with bytes that are not UTF-8 in `row` (parquet does not check them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = [v.encode() for v in table.column(column).to_pylist()]
    raw[row] = b"caf\xe9 \xff au lait"  # latin-1 bytes inside a UTF-8 column
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, column, pa.array(raw, pa.binary()).view(pa.string())), path)


def test_text_that_is_not_utf8_is_repaired_and_noted(write_parquet) -> None:
    path = write_parquet("train.parquet", [wsdm_row(1), wsdm_row(2)])
    _with_invalid_utf8(path, "prompt", 1)

    result = read_wsdm_train(path)

    assert result.notes["invalid_utf8_repaired"] == 1 and result.rows_kept == 2
    assert result.frame["prompt"].iloc[1] == "caf\ufffd \ufffd au lait"
    # What later steps do with the text now works: string operations and a parquet round trip.
    assert result.frame["prompt"].str.lower().iloc[1].startswith("caf")
    result.frame.to_parquet(path.with_name("rows.parquet"))


@pytest.mark.parametrize(
    ("ids", "bad"),
    [
        (["1", "abc"], "'abc'"),
        (["1", "2.5"], "'2.5'"),
        (["1", str(2**63)], repr(str(2**63))),
    ],
)
def test_a_test_id_the_submission_cannot_hold_is_refused(write_parquet, ids: list[str], bad: str) -> None:
    path = write_parquet("test.parquet", [wsdm_test_row(i, id=value) for i, value in enumerate(ids)])

    with pytest.raises(ReaderError, match=rf"test.parquet, column 'id', row 1: id {bad} is not an integer"):
        read_wsdm_test(path)


def test_uint64_test_ids_above_int64_are_refused_not_wrapped(write_parquet, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [wsdm_test_row(i) for i in range(2)]
    table = pa.Table.from_pylist(rows).set_column(0, "id", pa.array([1, 2**63 + 5], pa.uint64()))
    pq.write_table(table, tmp_path / "test.parquet")

    with pytest.raises(ReaderError, match=r"row 1: id '9223372036854775813' is not an integer"):
        read_wsdm_test(tmp_path / "test.parquet")
