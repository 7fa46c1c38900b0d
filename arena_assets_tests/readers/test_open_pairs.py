"""Open-model pair reader: several parquet files, id namespacing, cross-file duplicates."""

from __future__ import annotations

from arena_assets.readers import read_open_pairs
from arena_assets.readers.schema import CANONICAL_COLUMNS
from arena_assets_tests.readers.builders import open_row


def test_disjoint_ids_are_kept_as_they_are(write_parquet) -> None:
    v1 = write_parquet("v1.parquet", [open_row(1), open_row(2, prompt="写一首关于秋天的诗")])
    v2 = write_parquet("v2.parquet", [open_row(3)])
    result = read_open_pairs([v1, v2])
    assert list(result.frame.columns) == list(CANONICAL_COLUMNS)
    assert result.frame["id"].tolist() == ["1", "2", "3"]
    assert result.frame.loc[1, "prompt"] == "写一首关于秋天的诗"
    assert result.frame["winner"].isna().all() and (result.frame["source"] == "open_model").all()


def test_colliding_ids_are_namespaced_and_content_duplicates_dropped(write_parquet) -> None:
    v1 = write_parquet("v1.parquet", [open_row(1), open_row(2), open_row(2, prompt="other")])
    v2 = write_parquet(
        "v2.parquet",
        [
            open_row(1, prompt="new prompt"),
            open_row(5),
            open_row(6, prompt="open prompt 1", response_a="open a 1", response_b="open b 1"),  # = v1 row 1
            open_row(7, response_a=None),
            open_row(8, prompt="\t"),
            open_row(9, response_a="x", response_b="x"),
        ],
    )
    result = read_open_pairs([v1, v2])
    assert result.frame["id"].tolist() == ["v1:1", "v1:2", "v2:1", "v2:5"]
    assert result.rows_read == 9
    assert dict(+result.drops) == {"duplicate": 2, "null_text": 1, "empty_text": 1, "identical_responses": 1}
