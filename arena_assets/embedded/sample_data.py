"""Deterministic sample raw files in the real schemas (DESIGN §2), labelled by THE PREFERENCE RULE.

The rule, the files and their awkward rows are documented in docs/embedded-default.md. Every knob the lead
may tune for learnability is a constant below; bump GENERATOR_VERSION when output changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from arena_assets.embedded.vocab import LANGUAGE_WEIGHTS, LANGUAGES, Language

GENERATOR_VERSION = 1

# --- the preference rule ---
LABEL_NOISE = 0.03  # share of hard labels flipped, so a perfect learner stays near 0.97, not 1.0
MARKER_DENSITY = 0.12  # markers per word; the same for good and bad responses
MIN_MARKERS = 3  # at least one lands in the first and one in the last sentence (middle cut keeps both)
CROSS_MARKER_PROB = 0.10  # a response may carry one marker of the opposite kind; the majority decides
TOPIC_SHARE = 0.3  # share of non-marker words taken from the prompt's topic rather than generic filler

# --- lengths, in words (word units for Chinese and Japanese) ---
RESPONSE_WORDS = (40, 0.45, 20, 80)  # log-normal median, log-sd, clipped to [min, max]
LONG_WORDS = (2000, 6000)  # "long" rows: one text drawn uniformly from this range
SENTENCE_WORDS = (5, 12)
PROMPT_CONTEXT_WORDS = (0, 20)  # an optional context sentence before the question (kept when >= 3)
PARAGRAPH_SENTENCES = 4

# --- rows per file ---
ROWS = {
    "wsdm_train": 1200,
    "wsdm_test": 200,
    "lmsys_55k": 600,
    "lmsys_33k": 300,
    "open_v1": 150,
    "open_v2": 250,
    "open_v3": 100,
}
LMSYS_33K_DUPLICATES = 80  # rows of the 33k file copied from the 55k file by content, with new ids

# --- awkward rows: share of a file's rows, turned into exact counts (round(share * rows)) ---
AWKWARD: dict[str, dict[str, float]] = {
    "wsdm_train": {"identical": 0.01, "long": 0.01, "long_prompt": 0.005, "repeated_prompt": 0.04},
    "wsdm_test": {"identical": 0.01, "long": 0.015},
    "lmsys": {
        "tie": 0.06,
        "multi_turn": 0.06,
        "null_turn": 0.03,
        "identical": 0.02,
        "empty_response": 0.02,
        "long": 0.01,
        "long_prompt": 0.005,
    },
    "open": {"identical": 0.02, "long": 0.02},
}
ESCAPED_JSON_SHARE = 0.05  # LMSYS rows whose JSON lists escape non-ASCII (\u043a...) instead of UTF-8
UNSCORED_TEST_SHARE = 0.10  # WSDM test rows with scored=False

_MAX_TRIES = 50


_WORD = re.compile(r"\w+")


def _marker_sets(kind: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """Markers of `kind`: whole words for languages with spaces, substrings for Chinese and Japanese."""
    words = {m.lower() for lang in LANGUAGES if lang.spaced for m in getattr(lang, kind)}
    pieces = {m for lang in LANGUAGES if not lang.spaced for m in getattr(lang, kind)}
    if not all(_WORD.fullmatch(w) for w in words):
        raise ValueError(f"{kind} markers of spaced languages must be single words: {sorted(words)}")
    return frozenset(words), tuple(sorted(pieces))


_HELPFUL = _marker_sets("helpful")
_UNHELPFUL = _marker_sets("unhelpful")
# Counting substrings one by one is only exact when no marker contains another.
_PIECES = [*_HELPFUL[1], *_UNHELPFUL[1]]
if any(a != b and a in b for a in _PIECES for b in _PIECES):
    raise ValueError("a Chinese or Japanese marker contains another; pick markers that do not nest")


def marker_counts(text: str | None) -> tuple[int, int]:
    """(helpful, unhelpful) marker occurrences in `text`, case-insensitive."""
    lowered = (text or "").lower()
    words = _WORD.findall(lowered)
    counts = []
    for whole, pieces in (_HELPFUL, _UNHELPFUL):
        counts.append(len([w for w in words if w in whole]) + sum(lowered.count(p) for p in pieces))
    return counts[0], counts[1]


def is_good_response(text: str | None) -> bool:
    """The rule for one response: more helpful than unhelpful markers."""
    helpful, unhelpful = marker_counts(text)
    return helpful > unhelpful


def preference_rule_label(response_a: str | None, response_b: str | None) -> str | None:
    """The noise-free label: the one good response wins; None when both or neither are good."""
    good_a, good_b = is_good_response(response_a), is_good_response(response_b)
    if good_a == good_b:
        return None
    return "model_a" if good_a else "model_b"


def _pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _word_chars(lang: Language) -> float:
    """Mean characters a non-marker word adds, separator included."""
    words = [*lang.filler, *(w for topic in lang.topics for w in topic)]
    return float(np.mean([len(w) for w in words])) + (1.0 if lang.spaced else 0.0)


_WORD_CHARS = {lang.name: _word_chars(lang) for lang in LANGUAGES}


def response_words(rng: np.random.Generator, *, long: bool = False) -> int:
    """A response length in words, from the one distribution good and bad responses share."""
    if long:
        return int(rng.integers(LONG_WORDS[0], LONG_WORDS[1], endpoint=True))
    median, log_sd, low, high = RESPONSE_WORDS
    return int(np.clip(round(median * np.exp(log_sd * rng.standard_normal())), low, high))


def _plain_words(rng: np.random.Generator, lang: Language, topic: tuple[str, ...], chars: float) -> list[str]:
    """Filler and topic words until they add up to `chars` characters."""
    sep = 1 if lang.spaced else 0
    topic_chars = np.array([len(w) + sep for w in topic])
    filler_chars = np.array([len(w) + sep for w in lang.filler])
    words: list[str] = []
    total = 0.0
    # Drawn in batches because long rows hold thousands of words.
    while total < chars:
        batch = max(4, int((chars - total) / _WORD_CHARS[lang.name]) + 2)
        from_topic = rng.random(batch) < TOPIC_SHARE
        topic_index = rng.integers(len(topic), size=batch)
        filler_index = rng.integers(len(lang.filler), size=batch)
        running = total + np.cumsum(np.where(from_topic, topic_chars[topic_index], filler_chars[filler_index]))
        take = min(int(np.searchsorted(running, chars)) + 1, batch)
        for use_topic, t, f in zip(from_topic[:take], topic_index[:take], filler_index[:take], strict=True):
            words.append(topic[t] if use_topic else lang.filler[f])
        total = float(running[take - 1])
    return words


def _join(lang: Language, sentences: list[list[str]]) -> str:
    """Words into sentences and paragraphs, written the way the language writes them."""
    sep = " " if lang.spaced else ""
    rendered = []
    for words in sentences:
        text = sep.join(words)
        if lang.spaced:
            text = text[:1].upper() + text[1:]
        rendered.append(text + lang.sentence_end)
    paragraphs = [
        sep.join(rendered[i : i + PARAGRAPH_SENTENCES]) for i in range(0, len(rendered), PARAGRAPH_SENTENCES)
    ]
    return "\n\n".join(paragraphs)


def _split_sentences(rng: np.random.Generator, words: list[str]) -> list[list[str]]:
    sizes = rng.integers(SENTENCE_WORDS[0], SENTENCE_WORDS[1], endpoint=True, size=len(words) // SENTENCE_WORDS[0] + 1)
    bounds = [0, *np.cumsum(sizes).tolist()]
    sentences = [words[start:end] for start, end in zip(bounds, bounds[1:], strict=False) if start < len(words)]
    return sentences or [[]]


def make_response(
    rng: np.random.Generator, lang: Language, topic: tuple[str, ...], *, good: bool, words: int
) -> str:
    """A response of about `words` words whose markers make it good or bad; its length ignores `good`."""
    main, other = (lang.helpful, lang.unhelpful) if good else (lang.unhelpful, lang.helpful)
    for _ in range(_MAX_TRIES):
        markers = [_pick(rng, main) for _ in range(max(MIN_MARKERS, round(words * MARKER_DENSITY)))]
        cross = [_pick(rng, other)] if rng.random() < CROSS_MARKER_PROB else []
        sep = 1 if lang.spaced else 0
        # The character budget comes from `words` alone, so good and bad texts share a length distribution.
        marker_chars = sum(len(m) + sep for m in markers + cross)
        plain = _plain_words(rng, lang, topic, words * _WORD_CHARS[lang.name] - marker_chars)
        sentences = _split_sentences(rng, plain)
        # First and last sentence get a main marker each; the rest land anywhere.
        targets = [0, len(sentences) - 1]
        targets += [int(rng.integers(len(sentences))) for _ in range(len(markers) + len(cross) - 2)]
        for marker, target in zip(markers + cross, targets, strict=True):
            sentence = sentences[target]
            sentence.insert(int(rng.integers(len(sentence) + 1)), marker)
        text = _join(lang, sentences)
        expected = (len(markers), len(cross)) if good else (len(cross), len(markers))
        # Chinese and Japanese words join without spaces, so two words can spell a marker by accident.
        if marker_counts(text) == expected:
            return text
    raise RuntimeError(f"could not write a {lang.name} response without stray markers; check vocab.py")


def make_prompt(rng: np.random.Generator, lang: Language, topic: tuple[str, ...], *, long: bool = False) -> str:
    """A user query on `topic`, sometimes after a context sentence; marker-free."""
    for _ in range(_MAX_TRIES):
        question = _pick(rng, lang.prompts).format(t=topic[0], w=_pick(rng, topic[1:]))
        words = response_words(rng, long=True) if long else int(rng.integers(*PROMPT_CONTEXT_WORDS))
        parts = [question]
        if words >= 3:
            context = _plain_words(rng, lang, topic, words * _WORD_CHARS[lang.name])
            parts.insert(0, _join(lang, _split_sentences(rng, context)))
        text = (" " if lang.spaced else "").join(parts)
        if marker_counts(text) == (0, 0):
            return text
    raise RuntimeError(f"could not write a marker-free {lang.name} prompt; check vocab.py")


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
    extra: dict[str, object] = field(default_factory=dict)


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
    """One comparison of the given awkward `kind` ("plain" for none); the good side wins unless noise flips."""
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
        winner = _pick(rng, ("model_a", "model_b"))  # nothing to prefer: a coin flip, as raters do
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
