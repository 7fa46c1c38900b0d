"""`arena validate`: table and JSON output, exit code 2 on unusable files."""

from __future__ import annotations

import json

import pytest

from arena_assets.cli import main
from arena_assets_tests.readers.builders import lmsys_row, turns, wsdm_row


def test_validate_prints_a_table(write_parquet, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_parquet("train.parquet", [wsdm_row(1), wsdm_row(2, winner="tie"), wsdm_row(3)])
    assert main(["validate", "--source", "wsdm_train", str(path)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[:4] == [
        ["source", "wsdm_train"],
        ["files", str(path)],
        ["rows", "read", "3"],
        ["rows", "kept", "2"],
    ]
    assert ["tie", "1"] in lines and ["duplicate", "0"] in lines and ["drops:"] in lines


def test_validate_json_is_one_object(write_csv, capsys: pytest.CaptureFixture[str]) -> None:
    multi = lmsys_row(
        3, prompt=turns("Привет", "再见"), response_a=turns("a", "b"), response_b=turns("c", "d")
    )
    paths = [write_csv("one.csv", [lmsys_row(1), lmsys_row(2, "tie")]), write_csv("two.csv", [multi])]
    code = main(["validate", "--source", "lmsys_33k", "--json", "--multi-turn", "drop", *map(str, paths)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source"] == "lmsys_33k"
    assert summary["files"] == [str(p) for p in paths]
    assert (summary["rows_read"], summary["rows_kept"]) == (3, 1)
    assert summary["drops"]["tie"] == 1 and summary["drops"]["multi_turn_policy"] == 1
    assert set(summary) == {"source", "files", "rows_read", "rows_kept", "drops", "notes"}


def test_validate_bad_file_exits_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "train.parquet"
    assert main(["validate", "--source", "wsdm_train", "--json", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {missing}: file not found.")


def test_multi_turn_only_for_lmsys(write_parquet, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_parquet("train.parquet", [wsdm_row(1)])
    assert main(["validate", "--source", "wsdm_train", "--multi-turn", "first", str(path)]) == 2
    assert "--multi-turn applies to lmsys_33k, lmsys_55k only" in capsys.readouterr().err


def test_unknown_source_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--source", "kaggle", "x.csv"])
    assert exc.value.code == 2
    assert "invalid choice: 'kaggle'" in capsys.readouterr().err
