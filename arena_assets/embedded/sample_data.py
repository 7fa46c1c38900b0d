"""The sample data's knobs, THE PREFERENCE RULE, and the text generator that follows it.

docs/embedded-default.md documents the rule, the files and their awkward rows. Every knob that shapes the
data (rule strength, noise, lengths, sizes, awkward-row shares) is a constant below, so learnability can be
tuned in one place. A build is stamped with a hash of the generator's source (`GENERATOR_VERSION` in
__init__.py), so any change here regenerates the files.
"""

from __future__ import annotations

import math
import re
from functools import cache

import numpy as np

from arena_assets.embedded.vocab import LANGUAGES, Language

# --- the preference rule ---
LABEL_NOISE = 0.03  # share of hard labels flipped, so a perfect learner stays near 0.97, not 1.0
# Markers per word, the same for good and bad responses. The signal must stand out of the judge prompt's
# fixed text and the filler for a random-weight backbone to find it in a few hundred steps: at 0.12 (about
# 4% of a row's tokens) when it did so varied from run to run, and with it the demo's accuracy.
MARKER_DENSITY = 0.3
MIN_MARKERS = 3  # at least one lands in the first and one in the last sentence (middle cut keeps both)
CROSS_MARKER_PROB = 0.10  # a response may carry one marker of the opposite kind; the majority decides
TOPIC_SHARE = 0.3  # share of non-marker words taken from the prompt's topic rather than generic filler

# --- lengths, in words (word units for Chinese and Japanese) ---
RESPONSE_WORDS = (24, 0.45, 12, 48)  # log-normal median, log-sd, clipped to [min, max]
LONG_WORDS = (2000, 6000)  # "long" rows: one text drawn uniformly from this range
SENTENCE_WORDS = (5, 12)
PROMPT_CONTEXT_WORDS = (0, 20)  # an optional context sentence before the question (kept when >= 3)
PARAGRAPH_SENTENCES = 4

# --- rows per file ---
# The validation split (a fifth of the prompts in the demo profile) holds over 500 rows; the open-model
# pairs are almost as many as the human-labelled ones, so stage 2 has something to learn from them.
ROWS = {
    "wsdm_train": 2200,
    "wsdm_test": 200,
    "lmsys_55k": 600,
    "lmsys_33k": 300,
    "open_v1": 600,
    "open_v2": 1000,
    "open_v3": 400,
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


def pick(rng: np.random.Generator, items: tuple[str, ...] | list[str]) -> str:
    """One item, uniformly."""
    return items[int(rng.integers(len(items)))]


def _word_chars(lang: Language) -> float:
    """Mean characters a non-marker word adds, separator included."""
    words = [*lang.filler, *(w for topic in lang.topics for w in topic)]
    return float(np.mean([len(w) for w in words])) + (1.0 if lang.spaced else 0.0)


_WORD_CHARS = {lang.name: _word_chars(lang) for lang in LANGUAGES}
_BY_NAME = {lang.name: lang for lang in LANGUAGES}


def response_words(rng: np.random.Generator, *, long: bool = False) -> int:
    """A response length in words, from the one distribution good and bad responses share."""
    if long:
        return int(rng.integers(LONG_WORDS[0], LONG_WORDS[1], endpoint=True))
    median, log_sd, low, high = RESPONSE_WORDS
    return min(max(round(median * math.exp(log_sd * rng.standard_normal())), low), high)


@cache
def _chars_per_word(language: str, topic: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Characters each topic word and each filler word adds, separator included."""
    lang = _BY_NAME[language]
    sep = 1 if lang.spaced else 0
    return np.array([len(w) + sep for w in topic]), np.array([len(w) + sep for w in lang.filler])


def _plain_words(rng: np.random.Generator, lang: Language, topic: tuple[str, ...], chars: float) -> list[str]:
    """Filler and topic words until they add up to `chars` characters."""
    topic_chars, filler_chars = _chars_per_word(lang.name, topic)
    words: list[str] = []
    total = 0.0
    # Drawn in batches because long rows hold thousands of words.
    while total < chars:
        batch = int(1.5 * (chars - total) / _WORD_CHARS[lang.name]) + 4  # one round almost always
        from_topic = rng.random(batch) < TOPIC_SHARE
        topic_index = rng.integers(len(topic), size=batch)
        filler_index = rng.integers(len(lang.filler), size=batch)
        running = total + np.cumsum(
            np.where(from_topic, topic_chars[topic_index], filler_chars[filler_index])
        )
        take = min(int(np.searchsorted(running, chars)) + 1, batch)
        picks = zip(
            from_topic[:take].tolist(), topic_index[:take].tolist(), filler_index[:take].tolist(), strict=True
        )
        words += [topic[t] if use_topic else lang.filler[f] for use_topic, t, f in picks]
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
    sizes = rng.integers(
        SENTENCE_WORDS[0], SENTENCE_WORDS[1], endpoint=True, size=len(words) // SENTENCE_WORDS[0] + 1
    )
    bounds = [0, *np.cumsum(sizes).tolist()]
    sentences = [
        words[start:end] for start, end in zip(bounds, bounds[1:], strict=False) if start < len(words)
    ]
    return sentences or [[]]


def make_response(
    rng: np.random.Generator, lang: Language, topic: tuple[str, ...], *, good: bool, words: int
) -> str:
    """A response of about `words` words whose markers make it good or bad; its length ignores `good`."""
    main, other = (lang.helpful, lang.unhelpful) if good else (lang.unhelpful, lang.helpful)
    for _ in range(_MAX_TRIES):
        count = max(MIN_MARKERS, round(words * MARKER_DENSITY))
        markers = [main[i] for i in rng.integers(len(main), size=count).tolist()]
        cross = [pick(rng, other)] if rng.random() < CROSS_MARKER_PROB else []
        sep = 1 if lang.spaced else 0
        # The character budget comes from `words` alone, so good and bad texts share a length distribution.
        marker_chars = sum(len(m) + sep for m in markers + cross)
        plain = _plain_words(rng, lang, topic, words * _WORD_CHARS[lang.name] - marker_chars)
        sentences = _split_sentences(rng, plain)
        # First and last sentence get a main marker each; the rest land anywhere.
        targets = [0, len(sentences) - 1, *rng.integers(len(sentences), size=count + len(cross) - 2).tolist()]
        for marker, target, place in zip(
            markers + cross, targets, rng.random(len(targets)).tolist(), strict=True
        ):
            sentence = sentences[target]
            sentence.insert(int(place * (len(sentence) + 1)), marker)
        text = _join(lang, sentences)
        expected = (len(markers), len(cross)) if good else (len(cross), len(markers))
        # Chinese and Japanese words join without spaces, so two words can spell a marker by accident.
        if marker_counts(text) == expected:
            return text
    raise RuntimeError(f"could not write a {lang.name} response without stray markers; check vocab.py")


def make_prompt(
    rng: np.random.Generator, lang: Language, topic: tuple[str, ...], *, long: bool = False
) -> str:
    """A user query on `topic`, sometimes after a context sentence; marker-free."""
    for _ in range(_MAX_TRIES):
        question = pick(rng, lang.prompts).format(t=topic[0], w=pick(rng, topic[1:]))
        words = response_words(rng, long=True) if long else int(rng.integers(*PROMPT_CONTEXT_WORDS))
        parts = [question]
        if words >= 3:
            context = _plain_words(rng, lang, topic, words * _WORD_CHARS[lang.name])
            parts.insert(0, _join(lang, _split_sentences(rng, context)))
        text = (" " if lang.spaced else "").join(parts)
        if marker_counts(text) == (0, 0):
            return text
    raise RuntimeError(f"could not write a marker-free {lang.name} prompt; check vocab.py")
