"""LMSYS-layout CSV reader: one-hot labels, JSON turns, multi-turn policies."""

from __future__ import annotations

import pytest

from arena_assets.readers import read_lmsys, read_lmsys_33k
from arena_assets.readers.schema import CANONICAL_COLUMNS, MultiTurnPolicy
from arena_assets_tests.readers.builders import lmsys_row, turns


def test_keeps_good_rows_and_counts_each_drop(write_csv) -> None:
    rows = [
        lmsys_row(1),
        lmsys_row(2, "b", prompt=turns("日本の首都は？"), response_b=turns("東京です。")),
        lmsys_row(3, "tie"),
        lmsys_row(4, winner_model_b=1),  # two ones
        lmsys_row(5, winner_model_a=2, winner_model_b=-1),  # sums to one, not 0/1
        lmsys_row(6, winner_tie=None),  # blank label field
        lmsys_row(7, response_a='["unclosed'),
        lmsys_row(8, response_b='{"not": "a list"}'),
        lmsys_row(9, prompt="[1, 2]"),
        lmsys_row(10, response_a=turns(None)),
        lmsys_row(11, response_b="[]"),
        lmsys_row(12, response_b=None),  # blank CSV field
        lmsys_row(13, response_a=turns("  ")),
        lmsys_row(14, response_a=turns("same"), response_b=turns("same ")),
        lmsys_row(15, id=1001),  # repeated id
        lmsys_row(
            16, prompt=turns("question 1"), response_a=turns(" reply a 1"), response_b=turns("reply b 1")
        ),
        lmsys_row(17, "b", prompt=turns("Как сортировать список?"), response_a=turns("sorted()")),
    ]
    result = read_lmsys(write_csv("train.csv", rows))

    assert list(result.frame.columns) == list(CANONICAL_COLUMNS)
    assert result.frame["id"].tolist() == ["1001", "1002", "1017"]
    assert result.frame["winner"].tolist() == ["model_a", "model_b", "model_b"]
    assert result.rows_read == 17
    assert dict(+result.drops) == {
        "tie": 1,
        "bad_label": 3,
        "json_parse_error": 3,
        "null_text": 3,
        "empty_text": 1,
        "identical_responses": 1,
        "duplicate": 2,
    }
    assert result.frame.loc[1, "response_b"] == "東京です。"
    assert result.frame.loc[2, "prompt"] == "Как сортировать список?"
    assert result.frame["language"].isna().all() and (result.frame["source"] == "lmsys_55k").all()


def test_keep_ties_keeps_them_with_null_winner(write_csv) -> None:
    result = read_lmsys(write_csv("t.csv", [lmsys_row(1), lmsys_row(2, "tie")]), keep_ties=True)
    assert result.frame["id"].tolist() == ["1001", "1002"]
    assert result.frame["winner"].isna().tolist() == [False, True]
    assert result.drops["tie"] == 0


MULTI = {"prompt": turns("q1", "q2"), "response_a": turns("a1", None), "response_b": turns("b1", "b2")}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MultiTurnPolicy.JOIN, ("q1\n\nq2", "a1", "b1\n\nb2")),
        (MultiTurnPolicy.FIRST, ("q1", "a1", "b1")),
        (MultiTurnPolicy.DROP, None),
    ],
)
def test_multi_turn_policy(write_csv, policy: MultiTurnPolicy, expected: tuple[str, ...] | None) -> None:
    result = read_lmsys(write_csv("m.csv", [lmsys_row(1), lmsys_row(2, **MULTI)]), multi_turn=policy.value)
    if expected is None:
        assert result.frame["id"].tolist() == ["1001"]
        assert result.drops["multi_turn_policy"] == 1
    else:
        assert result.frame.loc[1, ["prompt", "response_a", "response_b"]].tolist() == list(expected)
        assert result.notes["multi_turn"] == 1


def test_turn_count_mismatch_uses_shared_turns(write_csv) -> None:
    row = lmsys_row(1, prompt=turns("q1", "q2"), response_a=turns("a1"), response_b=turns("b1", "b2"))
    result = read_lmsys(write_csv("m.csv", [row]))
    assert result.frame.loc[0, ["prompt", "response_a", "response_b"]].tolist() == ["q1", "a1", "b1"]
    assert result.notes["turn_count_mismatch"] == 1 and result.notes["multi_turn"] == 0


def test_first_policy_with_null_first_turn_is_null_text(write_csv) -> None:
    row = lmsys_row(1, response_a=turns(None, "late"), prompt=turns("q1", "q2"), response_b=turns("b1", "b2"))
    result = read_lmsys(write_csv("m.csv", [row]), multi_turn="first")
    assert result.rows_kept == 0 and result.drops["null_text"] == 1


@pytest.mark.parametrize("escape", ["\\ud83d", "\\uD83D"])
def test_lone_surrogate_is_repaired(write_csv, escape: str) -> None:
    row = lmsys_row(1, response_a=f'["broken emoji {escape} here"]')
    result = read_lmsys(write_csv("s.csv", [row]))
    assert result.frame.loc[0, "response_a"] == "broken emoji \ufffd here"
    assert result.notes["surrogates_replaced"] == 1


def test_33k_files_read_together_drop_shared_rows(write_csv) -> None:
    first = write_csv("part1.csv", [lmsys_row(1), lmsys_row(2)])
    second = write_csv("part2.csv", [lmsys_row(2), lmsys_row(3, "b")])
    result = read_lmsys_33k([first, second])
    assert result.frame["id"].tolist() == ["1001", "1002", "1003"]
    assert (result.frame["source"] == "lmsys_33k").all() and result.drops["duplicate"] == 1


def test_windows_export_with_bom_and_crlf(write_csv) -> None:
    path = write_csv("train.csv", [lmsys_row(1, prompt=turns("line one\r\nline two"))])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    result = read_lmsys(path)
    assert result.frame.loc[0, ["id", "prompt"]].tolist() == ["1001", "line one\nline two"]


def test_na_words_are_text_not_null(write_csv) -> None:
    result = read_lmsys(write_csv("train.csv", [lmsys_row(1, model_a="NA", model_b="null")]))
    assert result.frame.loc[0, ["model_a", "model_b"]].tolist() == ["NA", "null"]
