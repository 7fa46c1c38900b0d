"""THE PREFERENCE RULE: learnable from the text (perfect learner >= 0.95), not from position or length."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from arena_assets.embedded import preference_rule_label
from arena_assets.embedded.sample_data import is_good_response, marker_counts
from arena_assets.embedded.vocab import LANGUAGES, Language


def _rule_accuracy(frame: pd.DataFrame) -> float:
    """Accuracy of the noise-free rule against the labels; a None prediction scores as a coin flip."""
    scores = []
    for a, b, winner in zip(frame["response_a"], frame["response_b"], frame["winner"], strict=True):
        label = preference_rule_label(a, b)
        scores.append(0.5 if label is None else float(label == winner))
    return float(np.mean(scores))


def _longer_wins(lengths_a: pd.Series, lengths_b: pd.Series, winners: pd.Series) -> float:
    """Accuracy of picking the longer response."""
    return float((np.where(lengths_a > lengths_b, "model_a", "model_b") == winners).mean())


def test_rule_examples() -> None:
    good = "Certainly. The first step is the oven, because the dough needs heat; for example, bread."
    bad = "Sorry, I cannot help with the oven. Sadly the dough is unclear, and I refuse."
    assert preference_rule_label(good, bad) == "model_a"
    assert preference_rule_label(bad, good) == "model_b"
    assert preference_rule_label(good, good) is None
    assert preference_rule_label(bad, bad) is None
    assert preference_rule_label("", good) == "model_b"
    assert preference_rule_label("当然，首先看步骤，例如面团。", "抱歉，我无法回答。") == "model_a"
    assert preference_rule_label("Извините, увы, нельзя.", "Конечно, например, шаг за шагом.") == "model_b"


def test_markers_count_whole_words_only() -> None:
    assert marker_counts("Steps stepped; a footstep.") == (0, 0)  # no whole "step"
    assert marker_counts("STEP, Step and step.") == (3, 0)
    assert marker_counts("например, а не пример") == (1, 0)


@pytest.mark.parametrize("lang", LANGUAGES, ids=lambda lang: lang.name)
def test_vocabulary_is_marker_free(lang: Language) -> None:
    """Filler, topic and prompt text never spells a marker, so only the planted markers carry the label."""
    plain = [*lang.filler, *(word for topic in lang.topics for word in topic)]
    plain += [template.format(t="", w="") for template in lang.prompts]
    assert [word for word in plain if marker_counts(word) != (0, 0)] == []
    assert all(marker_counts(marker) == (1, 0) for marker in lang.helpful)
    assert all(marker_counts(marker) == (0, 1) for marker in lang.unhelpful)
    # Similar mean lengths keep the marker mix from making good responses longer in words.
    mean = [np.mean([len(m) for m in markers]) for markers in (lang.helpful, lang.unhelpful)]
    assert abs(mean[0] - mean[1]) <= 0.5


def test_perfect_learner_on_wsdm_train(hard_labelled: pd.DataFrame) -> None:
    accuracy = _rule_accuracy(hard_labelled[hard_labelled["source"] == "wsdm_train"])
    assert 0.95 <= accuracy < 0.99  # label noise keeps it from being trivial


def test_perfect_learner_on_lmsys(hard_labelled: pd.DataFrame) -> None:
    assert _rule_accuracy(hard_labelled[hard_labelled["source"] != "wsdm_train"]) >= 0.95


def test_position_and_length_do_not_predict(hard_labelled: pd.DataFrame) -> None:
    a, b, winners = hard_labelled["response_a"], hard_labelled["response_b"], hard_labelled["winner"]
    baselines = {
        "always A": float((winners == "model_a").mean()),
        "longer in characters": _longer_wins(a.str.len(), b.str.len(), winners),
        "longer in words": _longer_wins(a.str.split().str.len(), b.str.split().str.len(), winners),
    }
    for name, accuracy in baselines.items():
        assert 0.4 <= accuracy <= 0.6, f"{name}: {accuracy:.3f}"


def test_markers_survive_a_middle_cut(hard_labelled: pd.DataFrame) -> None:
    """The first and the last sentence of every response carry a marker of its kind."""
    ends = re.compile(r"[^.。]+[.。]")
    for text in pd.concat([hard_labelled["response_a"], hard_labelled["response_b"]]):
        if not text:
            continue
        sentences = ends.findall(text)
        for sentence in (sentences[0], sentences[-1]):
            helpful, unhelpful = marker_counts(sentence)
            assert (helpful if is_good_response(text) else unhelpful) >= 1, sentence
