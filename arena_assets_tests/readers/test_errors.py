"""Unusable files raise ReaderError naming the file, the place and the fix; never a bare traceback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from arena_assets.readers import read_lmsys, read_open_pairs, read_source, read_wsdm_test, read_wsdm_train
from arena_assets.readers.schema import ReaderError
from arena_assets_tests.readers.builders import lmsys_row, open_row, wsdm_row, wsdm_test_row


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match=r"nope\.parquet: file not found\. Check the path"):
        read_wsdm_train(tmp_path / "nope.parquet")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match=r"is a directory, not a file\. Pass the files inside it"):
        read_open_pairs(tmp_path)


def test_zero_byte_parquet(tmp_path: Path) -> None:
    (tmp_path / "train.parquet").touch()
    with pytest.raises(ReaderError, match=r"train\.parquet: file is empty \(0 bytes\)\. Download or export"):
        read_wsdm_train(tmp_path / "train.parquet")


def test_zero_byte_csv(tmp_path: Path) -> None:
    (tmp_path / "train.csv").touch()
    with pytest.raises(ReaderError, match=r"train\.csv: file is empty \(0 bytes\)"):
        read_lmsys(tmp_path / "train.csv")


def test_parquet_without_rows(write_parquet) -> None:
    path = write_parquet("train.parquet", pd.DataFrame([wsdm_row(1)]).iloc[:0])
    with pytest.raises(ReaderError, match=r"train\.parquet: file has no rows\. Download or export"):
        read_wsdm_train(path)


def test_csv_with_header_only(write_csv) -> None:
    path = write_csv("train.csv", pd.DataFrame([lmsys_row(1)]).iloc[:0])
    with pytest.raises(ReaderError, match=r"train\.csv: file has no rows"):
        read_lmsys(path)


def test_garbage_bytes_as_parquet(tmp_path: Path) -> None:
    path = tmp_path / "v1.parquet"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ReaderError, match=r"v1\.parquet: not a parquet file .*Pass the published \.parquet"):
        read_open_pairs(path)


def test_csv_given_to_a_parquet_reader(write_csv) -> None:
    path = write_csv("train.parquet", [lmsys_row(1)])
    with pytest.raises(ReaderError, match=r"not a parquet file .*looks like text/CSV.*--source lmsys_55k"):
        read_wsdm_train(path)


def test_parquet_given_to_the_csv_reader(write_parquet) -> None:
    path = write_parquet("train.csv", [wsdm_row(1)])
    with pytest.raises(ReaderError, match=r"train\.csv: is a parquet file, not CSV\. Use a parquet source"):
        read_lmsys(path)


def test_non_utf8_csv_names_the_line(write_csv) -> None:
    path = write_csv("train.csv", [lmsys_row(1), lmsys_row(2)])
    path.write_bytes(path.read_bytes().replace(b"reply b 2", "réponse".encode("latin-1")))
    with pytest.raises(
        ReaderError, match=r"train\.csv: not UTF-8 text at line 3 \(byte 0xe9.*Re-save .* UTF-8"
    ):
        read_lmsys(path)


def test_garbage_bytes_as_csv(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(bytes(range(128, 256)) * 8)
    with pytest.raises(ReaderError, match=r"train\.csv: not UTF-8 text at line 1"):
        read_lmsys(path)


def test_csv_with_ragged_rows(write_csv) -> None:
    path = write_csv("train.csv", [lmsys_row(1)])
    path.write_text(path.read_text(encoding="utf-8") + "2,x,y,extra\n", encoding="utf-8")
    with pytest.raises(
        ReaderError, match=r"train\.csv: not a readable CSV \(.*Expected 9 columns, got 4.*Export it"
    ):
        read_lmsys(path)


def test_missing_columns_are_all_listed(write_parquet) -> None:
    path = write_parquet("train.parquet", pd.DataFrame([wsdm_row(1)]).drop(columns=["winner", "language"]))
    with pytest.raises(
        ReaderError,
        match=r"train\.parquet: missing column\(s\) 'winner', 'language'; expected columns id, prompt, "
        r"response_a, response_b, winner, model_a, model_b, language \(found .*\)\. Check that this is a "
        r"wsdm_train file",
    ):
        read_wsdm_train(path)


def test_missing_csv_column(write_csv) -> None:
    path = write_csv("train.csv", pd.DataFrame([lmsys_row(1)]).drop(columns=["winner_tie"]))
    with pytest.raises(ReaderError, match=r"missing column\(s\) 'winner_tie'; expected columns id, model_a"):
        read_lmsys(path)


def test_numeric_winner_column(write_parquet) -> None:
    path = write_parquet("train.parquet", [wsdm_row(1, winner=0), wsdm_row(2, winner=1)])
    with pytest.raises(
        ReaderError,
        match=r"train\.parquet, column 'winner': has type int64, expected strings\. Write 'winner'",
    ):
        read_wsdm_train(path)


def test_prompt_not_string(write_parquet) -> None:
    path = write_parquet("v1.parquet", [open_row(1, prompt=1.5), open_row(2, prompt=2.5)])
    with pytest.raises(ReaderError, match=r"v1\.parquet, column 'prompt': has type double, expected strings"):
        read_open_pairs(path)


def test_scored_not_boolean(write_parquet) -> None:
    path = write_parquet("test.parquet", [wsdm_test_row(1, scored="yes")])
    with pytest.raises(ReaderError, match=r"column 'scored': has type .*string, expected booleans"):
        read_wsdm_test(path)


def test_label_column_without_numbers(write_csv) -> None:
    path = write_csv("train.csv", [lmsys_row(1, winner_model_a="yes"), lmsys_row(2, winner_model_a="no")])
    with pytest.raises(
        ReaderError, match=r"train\.csv, column 'winner_model_a': holds no numbers .*one-hot 0/1"
    ):
        read_lmsys(path)


def test_null_id_names_the_row(write_parquet) -> None:
    frame = pd.DataFrame([wsdm_test_row(1), wsdm_test_row(2, id=None)]).astype({"id": "Int64"})
    path = write_parquet("test.parquet", frame)
    with pytest.raises(
        ReaderError, match=r"test\.parquet, column 'id', row 1: id is null\. Every row needs an id"
    ):
        read_wsdm_test(path)


def test_unknown_source() -> None:
    with pytest.raises(ValueError, match=r"unknown source 'wsdm'; known sources: wsdm_train, wsdm_test"):
        read_source("wsdm", [])
