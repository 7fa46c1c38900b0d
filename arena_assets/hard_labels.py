"""The hard-label set: sources combined, deduplicated, ties dropped, split by prompt, swap pairs added."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from arena_assets.ranker.data import interleave_swaps, normalise
from arena_assets.readers.schema import CANONICAL_COLUMNS, DropReason

if TYPE_CHECKING:
    from arena_assets.settings import Settings


@dataclass
class HardLabelSet:
    """Train rows (each followed by its swap) and validation rows (original order only)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    drops: Counter[str]
    rows_in: int


def validation_bucket(prompt_key: str, seed: int) -> float:
    """A stable number in [0, 1) from the prompt: rows with one prompt always land in one split."""
    digest = hashlib.blake2b(f"{seed}:{prompt_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def build_hard_label_set(
    frames: list[pd.DataFrame], *, validation_fraction: float, seed: int
) -> HardLabelSet:
    """Combine canonical frames in priority order (the first copy of a duplicate wins)."""
    combined = pd.concat([f[list(CANONICAL_COLUMNS)] for f in frames], ignore_index=True)
    drops: Counter[str] = Counter()
    rows_in = len(combined)

    unlabeled = ~combined["winner"].isin(["model_a", "model_b"])
    drops[DropReason.TIE.value] += int(unlabeled.sum())
    combined = combined[~unlabeled]

    prompt_key = normalise(combined["prompt"])
    a_key, b_key = normalise(combined["response_a"]), normalise(combined["response_b"])
    # A pair shown in the other order is the same judgement: order the responses inside the key.
    low = a_key.where(a_key <= b_key, b_key)
    high = b_key.where(a_key <= b_key, a_key)
    duplicate = (prompt_key + "\x00" + low + "\x00" + high).duplicated(keep="first")
    drops[DropReason.DUPLICATE.value] += int(duplicate.sum())
    combined, prompt_key = combined[~duplicate], prompt_key[~duplicate]

    combined = combined.assign(pair_id=combined["source"].astype(str) + ":" + combined["id"].astype(str))
    in_validation = prompt_key.map(lambda key: validation_bucket(key, seed) < validation_fraction)
    validation = combined[in_validation.to_numpy()].reset_index(drop=True).assign(is_swapped=False)
    train = interleave_swaps(combined[~in_validation.to_numpy()].reset_index(drop=True))
    return HardLabelSet(train=train, validation=validation, drops=drops, rows_in=rows_in)


def hard_label_set_of(settings: Settings) -> HardLabelSet:
    """The settings' raw labelled files (WSDM, LMSYS 55k, the 33k set, in that priority) read and built as
    the `hard_label_set` asset builds them, outside Dagster (tests, benchmarks)."""
    from arena_assets.readers import read_source

    frames = [
        read_source("wsdm_train", [settings.wsdm_train_path]).frame,
        read_source("lmsys_55k", [settings.lmsys_55k_path]).frame,
        read_source("lmsys_33k", settings.lmsys_33k_paths()).frame,
    ]
    return build_hard_label_set(
        frames, validation_fraction=settings.validation_fraction, seed=settings.data_seed
    )
