"""The sample raw files as DataFrames in the published layouts (README, 'Data'), all from one seed.

Each file draws from its own random stream (seed, file name), so resizing one file leaves the others as
they were. Sizes and awkward-row shares are the constants in `sample_data`.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from arena_assets.embedded.pairs import Pair, generate_pairs
from arena_assets.embedded.sample_data import (
    AWKWARD,
    ESCAPED_JSON_SHARE,
    LMSYS_33K_DUPLICATES,
    ROWS,
    UNSCORED_TEST_SHARE,
)
from arena_assets.embedded.vocab import LMSYS_MODELS, OPEN_MODELS, WSDM_MODELS

OPEN_VERSIONS = ("v1", "v2", "v3")
OPEN_COLUMNS = ("id", "prompt", "response_a", "response_b", "model_a", "model_b", "language")
WSDM_TRAIN_COLUMNS = ("id", "prompt", "response_a", "response_b", "winner", "model_a", "model_b", "language")
WSDM_TEST_COLUMNS = ("id", "prompt", "response_a", "response_b", "scored")
LMSYS_COLUMNS = (
    "id",
    "model_a",
    "model_b",
    "prompt",
    "response_a",
    "response_b",
    "winner_model_a",
    "winner_model_b",
    "winner_tie",
)


@dataclass
class SampleData:
    """Every sample file as a frame, the awkward-row counts per file, and all text for the tokenizer."""

    wsdm_train: pd.DataFrame
    wsdm_test: pd.DataFrame
    wsdm_test_labels: pd.DataFrame  # demo only: the real test labels are hidden
    lmsys_55k: pd.DataFrame
    lmsys_33k: pd.DataFrame
    open_model_pairs: dict[str, pd.DataFrame]  # version ("v1") -> frame
    stats: dict[str, dict[str, int]]
    corpus: list[str]


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _model_pair(rng: np.random.Generator, names: tuple[str, ...]) -> tuple[str, str]:
    first, second = rng.choice(len(names), size=2, replace=False)
    return names[int(first)], names[int(second)]


def _hex_ids(rng: np.random.Generator, rows: int) -> list[str]:
    """64-hex ids like WSDM's; 256 random bits each, so collisions do not happen."""
    return [rng.bytes(32).hex() for _ in range(rows)]


def _int_ids(
    rng: np.random.Generator, rows: int, taken: set[int] | None = None, *, high: int = 4_294_967_295
) -> list[int]:
    """Distinct integer ids below `high` (LMSYS's range by default), none of them in `taken`."""
    taken = set(taken or ())
    ids: list[int] = []
    while len(ids) < rows:
        candidate = int(rng.integers(10_000, high))
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


def _single(turns: list[str | None]) -> str:
    (text,) = turns  # WSDM and open-model pairs are single-turn
    return text or ""


def _stats(pairs: list[Pair], *, labelled: bool = True, **extra: int) -> dict[str, int]:
    """Rows, awkward rows by kind and, where the file has labels, flipped labels and the A share."""
    kinds = Counter(p.kind for p in pairs if p.kind != "plain")
    labels = {
        "label_noise": sum(p.noisy for p in pairs),
        "winner_model_a": sum(p.winner == "model_a" for p in pairs),
    }
    return {"rows": len(pairs), **dict(sorted(kinds.items())), **(labels if labelled else {}), **extra}


def _wsdm_frame(
    rng: np.random.Generator, pairs: list[Pair], model_names: tuple[str, ...] = WSDM_MODELS
) -> pd.DataFrame:
    models = [_model_pair(rng, model_names) for _ in pairs]
    return pd.DataFrame(
        {
            "prompt": [_single(p.prompt) for p in pairs],
            "response_a": [_single(p.response_a) for p in pairs],
            "response_b": [_single(p.response_b) for p in pairs],
            "winner": [p.winner for p in pairs],
            "model_a": [a for a, _ in models],
            "model_b": [b for _, b in models],
            "language": [p.language.name for p in pairs],
        }
    )


def _lmsys_frame(
    rng: np.random.Generator, pairs: list[Pair], ids: list[int]
) -> tuple[pd.DataFrame, set[int]]:
    """The LMSYS layout: JSON lists of turns as strings, one-hot winner; also the rows with escaped JSON."""
    escaped = set(rng.permutation(len(pairs))[: round(ESCAPED_JSON_SHARE * len(pairs))].tolist())
    models = [_model_pair(rng, LMSYS_MODELS) for _ in pairs]

    def dump(turns: list[str | None], row: int) -> str:
        return json.dumps(turns, ensure_ascii=row in escaped)

    frame = pd.DataFrame(
        {
            "id": ids,
            "model_a": [a for a, _ in models],
            "model_b": [b for _, b in models],
            "prompt": [dump(p.prompt, i) for i, p in enumerate(pairs)],
            "response_a": [dump(p.response_a, i) for i, p in enumerate(pairs)],
            "response_b": [dump(p.response_b, i) for i, p in enumerate(pairs)],
            "winner_model_a": [int(p.winner == "model_a") for p in pairs],
            "winner_model_b": [int(p.winner == "model_b") for p in pairs],
            "winner_tie": [int(p.winner == "tie") for p in pairs],
        }
    )
    return frame[list(LMSYS_COLUMNS)], escaped


def _lmsys_stats(pairs: list[Pair], escaped: int, **extra: int) -> dict[str, int]:
    return _stats(
        pairs,
        multi_turn_rows=sum(len(p.prompt) > 1 for p in pairs),
        rows_with_null_turn=sum(None in p.response_a + p.response_b for p in pairs),
        escaped_json=escaped,
        **extra,
    )


def generate_sample_data(seed: int) -> SampleData:
    """All sample files for `seed`; the same seed gives the same frames, row for row."""
    stats: dict[str, dict[str, int]] = {}
    all_pairs: list[Pair] = []

    rng = _rng(seed, "wsdm_train")
    pairs = generate_pairs(rng, ROWS["wsdm_train"], AWKWARD["wsdm_train"])
    wsdm_train = _wsdm_frame(rng, pairs)
    wsdm_train.insert(0, "id", _hex_ids(rng, len(pairs)))
    wsdm_train = wsdm_train[list(WSDM_TRAIN_COLUMNS)]
    stats["wsdm_train"] = _stats(pairs)
    all_pairs += pairs

    rng = _rng(seed, "wsdm_test")
    pairs = generate_pairs(rng, ROWS["wsdm_test"], AWKWARD["wsdm_test"])
    frame = _wsdm_frame(rng, pairs)
    ids = np.asarray(_int_ids(rng, len(pairs), high=1_000_000), dtype="int64")
    scored = np.ones(len(pairs), dtype=bool)
    scored[rng.permutation(len(pairs))[: round(UNSCORED_TEST_SHARE * len(pairs))]] = False
    wsdm_test = frame[["prompt", "response_a", "response_b"]].assign(scored=scored)
    wsdm_test.insert(0, "id", ids)
    wsdm_test = wsdm_test[list(WSDM_TEST_COLUMNS)]
    wsdm_test_labels = pd.DataFrame({"id": ids, "winner": frame["winner"]})
    stats["wsdm_test"] = _stats(pairs, unscored=int((~scored).sum()))
    all_pairs += pairs

    rng = _rng(seed, "lmsys_55k")
    pairs_55k = generate_pairs(rng, ROWS["lmsys_55k"], AWKWARD["lmsys"])
    lmsys_55k, escaped_55k = _lmsys_frame(rng, pairs_55k, _int_ids(rng, len(pairs_55k)))
    stats["lmsys_55k"] = _lmsys_stats(pairs_55k, len(escaped_55k))
    all_pairs += pairs_55k

    rng = _rng(seed, "lmsys_33k")
    pairs = generate_pairs(rng, ROWS["lmsys_33k"] - LMSYS_33K_DUPLICATES, AWKWARD["lmsys"])
    fresh, escaped = _lmsys_frame(rng, pairs, _int_ids(rng, len(pairs), set(lmsys_55k["id"].tolist())))
    rows = np.sort(rng.choice(len(lmsys_55k), LMSYS_33K_DUPLICATES, replace=False)).tolist()
    copied = lmsys_55k.iloc[rows].copy()
    # Same conversation and votes as in the 55k file, under ids neither file uses yet.
    copied["id"] = _int_ids(rng, len(copied), set(lmsys_55k["id"].tolist()) | set(fresh["id"].tolist()))
    lmsys_33k = pd.concat([fresh, copied], ignore_index=True)
    lmsys_33k = lmsys_33k.iloc[rng.permutation(len(lmsys_33k))].reset_index(drop=True)
    escaped_total = len(escaped) + len(escaped_55k.intersection(rows))
    stats["lmsys_33k"] = _lmsys_stats(
        pairs + [pairs_55k[i] for i in rows], escaped_total, duplicates_of_55k=len(copied)
    )
    all_pairs += pairs

    open_model_pairs = {}
    for version in OPEN_VERSIONS:
        rng = _rng(seed, f"open_{version}")
        pairs = generate_pairs(rng, ROWS[f"open_{version}"], AWKWARD["open"])
        frame = _wsdm_frame(rng, pairs, OPEN_MODELS).drop(columns="winner")  # the label stays hidden
        frame.insert(0, "id", _hex_ids(rng, len(pairs)))
        open_model_pairs[version] = frame[list(OPEN_COLUMNS)]
        stats[f"open_{version}"] = _stats(pairs, labelled=False)
        all_pairs += pairs

    corpus = [t for p in all_pairs for t in (*p.prompt, *p.response_a, *p.response_b) if t]
    return SampleData(
        wsdm_train=wsdm_train,
        wsdm_test=wsdm_test,
        wsdm_test_labels=wsdm_test_labels,
        lmsys_55k=lmsys_55k,
        lmsys_33k=lmsys_33k,
        open_model_pairs=open_model_pairs,
        stats=stats,
        corpus=corpus,
    )
