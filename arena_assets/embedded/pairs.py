"""Comparisons before they take a file's layout: a prompt, two responses of known quality, the winner."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arena_assets.embedded.sample_data import LABEL_NOISE, make_prompt, make_response, pick, response_words
from arena_assets.embedded.vocab import LANGUAGE_WEIGHTS, LANGUAGES, Language


@dataclass
class Pair:
    """One generated comparison before it is written in a source's layout; turns may be None."""

    kind: str
    language: Language
    topic: tuple[str, ...]
    prompt: list[str | None]
    response_a: list[str | None]
    response_b: list[str | None]
    winner: str  # model_a, model_b or tie
    noisy: bool = False


_LANGUAGE_CDF = np.cumsum(LANGUAGE_WEIGHTS)


def pick_language(rng: np.random.Generator) -> Language:
    """A language drawn with LANGUAGE_WEIGHTS."""
    index = int(np.searchsorted(_LANGUAGE_CDF, rng.random() * _LANGUAGE_CDF[-1], side="right"))
    return LANGUAGES[min(index, len(LANGUAGES) - 1)]


def make_pair(
    rng: np.random.Generator,
    kind: str,
    *,
    language: Language | None = None,
    topic: tuple[str, ...] | None = None,
    prompt: list[str | None] | None = None,
) -> Pair:
    """One comparison of awkward `kind` ("plain" for none); the good side wins unless noise flips it."""
    lang = language or pick_language(rng)
    topic = topic or lang.topics[int(rng.integers(len(lang.topics)))]
    # Null turns sit in conversations of 1-3 turns ('[null]' or '["...", null]'); multi_turn has 2-3.
    turns = {"multi_turn": int(rng.integers(2, 4)), "null_turn": int(rng.integers(1, 4))}.get(kind, 1)
    prompt = prompt or [make_prompt(rng, lang, topic, long=kind == "long_prompt") for _ in range(turns)]
    turns = len(prompt)
    a_good = bool(rng.random() < 0.5)
    # A tie pairs two responses of one quality; every other kind pairs a good with a bad one.
    good_a, good_b = (a_good, a_good) if kind == "tie" else (a_good, not a_good)
    long_side = int(rng.integers(2)) if kind == "long" else -1

    def side(good: bool, index: int) -> list[str | None]:
        return [
            make_response(rng, lang, topic, good=good, words=response_words(rng, long=long_side == index))
            for _ in range(turns)
        ]

    response_a, response_b = side(good_a, 0), side(good_b, 1)
    winner = "model_a" if good_a else "model_b"
    noisy = False
    if kind == "tie":
        winner = "tie"
    elif kind == "identical":
        response_b = list(response_a)
        winner = pick(rng, ("model_a", "model_b"))  # nothing to prefer: a coin flip, as raters do
    else:
        if kind == "empty_response":
            # The bad side says nothing; the rule (and a rater) prefers the other one.
            response_a, response_b = (response_a, [""]) if good_a else ([""], response_b)
        elif kind == "null_turn":
            losing = response_b if good_a else response_a
            losing[int(rng.integers(turns))] = None  # the winner keeps all its turns, so the rule holds
        noisy = bool(rng.random() < LABEL_NOISE)
        if noisy:
            winner = "model_b" if winner == "model_a" else "model_a"
    return Pair(kind, lang, topic, prompt, response_a, response_b, winner, noisy)


def assign_kinds(rng: np.random.Generator, rows: int, shares: dict[str, float]) -> list[str]:
    """Exactly round(share * rows) rows of each awkward kind at random places; the rest "plain"."""
    kinds = ["plain"] * rows
    order = rng.permutation(rows)
    start = 0
    for kind, share in shares.items():
        count = round(share * rows)
        for index in order[start : start + count]:
            kinds[int(index)] = kind
        start += count
    if start > rows:
        raise ValueError(f"awkward shares {shares} add up to more than {rows} rows")
    return kinds


def generate_pairs(rng: np.random.Generator, rows: int, shares: dict[str, float]) -> list[Pair]:
    """Rows of the given awkward shares; repeated_prompt rows reuse an earlier plain row's prompt."""
    kinds = assign_kinds(rng, rows, shares)
    pairs: dict[int, Pair] = {i: make_pair(rng, k) for i, k in enumerate(kinds) if k != "repeated_prompt"}
    plain = [i for i, kind in enumerate(kinds) if kind == "plain"]
    for i, kind in enumerate(kinds):
        if kind == "repeated_prompt":
            src = pairs[plain[int(rng.integers(len(plain)))]]
            pairs[i] = make_pair(rng, kind, language=src.language, topic=src.topic, prompt=src.prompt)
    return [pairs[i] for i in range(rows)]
