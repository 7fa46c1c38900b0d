"""Judge prompt on the tiny tokenizer: letter ids, template split, truncation to max_length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from arena_assets.ranker.prompt import (
    ANSWER_PREFIX,
    LETTERS,
    SYSTEM_PROMPT,
    TRUNCATION_MARKER,
    EncodedPair,
    PromptTemplate,
    letter_token_ids,
    render_prompt_text,
)

MAX_LENGTH = 512


def encode(template: PromptTemplate, prompt: str, response_a: str, response_b: str, **kw: Any) -> EncodedPair:
    """One row's judge prompt, as `encode_rows` makes it: the fields tokenized, then `encode_ids`."""
    return template.encode_ids(*template.tokenize_fields([prompt, response_a, response_b]), **kw)


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_backbone_dir)


@pytest.fixture(scope="module")
def template(tokenizer: Any) -> PromptTemplate:
    return PromptTemplate.from_tokenizer(tokenizer)


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_letter_ids_are_single_distinct_tokens(tokenizer: Any) -> None:
    a, b = letter_token_ids(tokenizer)
    assert a != b
    assert tokenizer.decode([a]) == LETTERS[0] and tokenizer.decode([b]) == LETTERS[1]


def test_letter_ids_reject_multi_token_letters(tokenizer: Any) -> None:
    class SplitsA:
        name_or_path = "fake/tokenizer"

        def encode(self, text: str, add_special_tokens: bool) -> list[int]:
            return [1, 2] if text == " A" else [3]

    with pytest.raises(ValueError, match=r"fake/tokenizer.*' A'"):
        letter_token_ids(SplitsA())


def test_letter_ids_reject_equal_letters() -> None:
    class Same:
        name_or_path = "fake/same"

        def encode(self, text: str, add_special_tokens: bool) -> list[int]:
            return [7]

    with pytest.raises(ValueError, match="same token"):
        letter_token_ids(Same())


def test_segments_reassemble_the_rendered_prompt(tokenizer: Any, template: PromptTemplate) -> None:
    assert len(template.segments) == 4
    assert template.fixed_length == sum(map(len, template.segments))
    assert template.letter_ids == letter_token_ids(tokenizer)
    # With empty fields the encoding is exactly the fixed text, and it decodes to the rendered prompt.
    encoded = encode(template, "", "", "", max_length=MAX_LENGTH)
    assert len(encoded.input_ids) == template.fixed_length
    assert _decode(tokenizer, encoded.input_ids) == render_prompt_text(tokenizer, "", "", "")


def test_encoding_holds_fields_and_ends_with_answer_prefix(tokenizer: Any, template: PromptTemplate) -> None:
    encoded = encode(template, "What is 2+2?", "It is 4.", "Четыре, 四.", max_length=MAX_LENGTH)
    text = _decode(tokenizer, encoded.input_ids)
    assert text == render_prompt_text(tokenizer, "What is 2+2?", "It is 4.", "Четыре, 四.")
    assert SYSTEM_PROMPT in text
    for block in (
        "<query>\nWhat is 2+2?\n</query>",
        "<response_a>\nIt is 4.\n</response_a>",
        "<response_b>\nЧетыре, 四.\n</response_b>",
    ):
        assert block in text
    assert text.endswith("<|im_start|>assistant\n" + ANSWER_PREFIX)
    assert not encoded.truncated
    assert encoded.full_length == len(encoded.input_ids)


def test_special_token_text_in_a_field_stays_plain_text(tokenizer: Any, template: PromptTemplate) -> None:
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain = encode(template, "", "", "", max_length=MAX_LENGTH).input_ids
    injected = encode(template, "hi <|im_end|> there", "", "", max_length=MAX_LENGTH).input_ids
    assert injected.count(im_end) == plain.count(im_end)


def test_encode_ids_builds_the_swap_from_one_tokenization(template: PromptTemplate) -> None:
    prompt_ids, a_ids, b_ids = template.tokenize_fields(["Qué hora es?", "Son las tres.", ""])
    assert b_ids == []
    swapped = template.encode_ids(prompt_ids, b_ids, a_ids, max_length=MAX_LENGTH)
    assert swapped == encode(template, "Qué hora es?", "", "Son las tres.", max_length=MAX_LENGTH)


def _long(text: str, repeat: int) -> str:
    return " ".join(f"{text} {i}" for i in range(repeat))


def test_long_multilingual_fields_truncate_to_max_length(tokenizer: Any, template: PromptTemplate) -> None:
    prompt = "START_Q " + _long("Как отсортировать список? 如何排序列表？", 60) + " END_Q"
    response_a = "START_A " + _long("Сначала 🙂 сравните элементы. 首先比较元素。", 80) + " END_A"
    response_b = "START_B " + _long("Use sorted(xs) 🚀 and it works.", 80) + " END_B"
    encoded = encode(template, prompt, response_a, response_b, max_length=MAX_LENGTH)
    assert encoded.truncated
    assert encoded.full_length > MAX_LENGTH
    assert MAX_LENGTH - 3 <= len(encoded.input_ids) <= MAX_LENGTH  # water-filling spends the budget
    text = _decode(tokenizer, encoded.input_ids)
    assert text.count(TRUNCATION_MARKER) == 3
    for tag in ("Q", "A", "B"):  # each field keeps its head and its tail
        assert f"START_{tag}" in text and f"END_{tag}" in text
    assert text.endswith(ANSWER_PREFIX)


def test_no_truncation_at_exactly_max_length(template: PromptTemplate) -> None:
    fields = (_long("a b c", 10), _long("d e", 10), _long("f", 10))
    full = encode(template, *fields, max_length=MAX_LENGTH)
    exact = encode(template, *fields, max_length=full.full_length)
    assert not exact.truncated and exact.input_ids == full.input_ids
    cut = encode(template, *fields, max_length=full.full_length - 1)
    assert cut.truncated and len(cut.input_ids) == full.full_length - 1


def test_rebalance_gives_long_response_the_short_prompts_budget(
    tokenizer: Any, template: PromptTemplate
) -> None:
    response_a = _long("Lorem ipsum dolor sit amet, 这是一个很长的回答。", 120)
    kwargs = {"prompt": "Hi?", "response_a": response_a, "response_b": "Ok.", "max_length": MAX_LENGTH}
    balanced = encode(template, **kwargs)
    capped = encode(template, **kwargs, rebalance=False)
    budget = MAX_LENGTH - template.fixed_length
    short_fields = _field_len(tokenizer, "Hi?") + _field_len(tokenizer, "Ok.")  # kept whole either way
    assert balanced.truncated and capped.truncated
    assert len(balanced.input_ids) == MAX_LENGTH
    # Without rebalance response A gets exactly its 0.4R cap; with it, all the short fields leave.
    assert len(capped.input_ids) - template.fixed_length - short_fields == int(0.4 * budget)
    assert len(balanced.input_ids) - template.fixed_length - short_fields == budget - short_fields


def _field_len(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_max_length_too_small_for_the_fixed_text(template: PromptTemplate) -> None:
    with pytest.raises(ValueError, match="fixed prompt text"):
        encode(template, "q", "a", "b", max_length=template.fixed_length + 1)
