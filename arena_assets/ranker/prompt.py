"""The judge prompt: system message, tagged user message, chat template, answer prefix, letter token ids.

The chat template is rendered once per tokenizer with placeholders for the three fields and split into four
fixed segments, each tokenized once; a row's encoding is those segments with its (truncated) field tokens
in between. So the fixed text costs no tokenizer time per row and truncation works on exact token counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arena_assets.ranker.truncation import truncate_fields

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SYSTEM_PROMPT = (
    "You are an impartial judge comparing two responses, A and B, written by AI assistants to the same "
    "user query. Decide which response the user would prefer. Weigh helpfulness, correctness, how well "
    "the response follows the user's instructions, whether it answers in the user's language, and "
    "clarity. Ignore the order of the responses and do not favour a response for its length alone."
)

# Field names in prompt order; each has its own tagged block in the user message.
FIELDS = ("query", "response_a", "response_b")
USER_TEMPLATE = (
    "<query>\n{query}\n</query>\n"
    "---\n"
    "<response_a>\n{response_a}\n</response_a>\n"
    "---\n"
    "<response_b>\n{response_b}\n</response_b>\n"
    "---\n"
    "Which response would the user prefer? Answer with A or B."
)
ANSWER_PREFIX = "Answer:"
# The leading space matters: after "Answer:" the model's next token is " A" or " B".
LETTERS = (" A", " B")
TRUNCATION_MARKER = "\n…(truncated)…\n"
# Fewest field tokens a max_length must leave after the fixed text; below this every field is a stub.
MIN_FIELD_BUDGET = 32

# Stand-ins for the fields while rendering the chat template; text no template adds or alters.
_PLACEHOLDERS = {name: f"@@ARENA_FIELD_{name.upper()}@@" for name in FIELDS}


def _tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def letter_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of " A" and " B"; ValueError unless each is exactly one token and they differ."""
    ids = []
    for letter in LETTERS:
        encoded = tokenizer.encode(letter, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"tokenizer {_tokenizer_name(tokenizer)!r} encodes the answer letter {letter!r} to "
                f"{len(encoded)} tokens {encoded}; the ranker needs exactly one"
            )
        ids.append(int(encoded[0]))
    if ids[0] == ids[1]:
        raise ValueError(
            f"tokenizer {_tokenizer_name(tokenizer)!r} encodes {LETTERS[0]!r} and {LETTERS[1]!r} to the same "
            f"token {ids[0]}"
        )
    return ids[0], ids[1]


def render_prompt_text(tokenizer: Any, query: str, response_a: str, response_b: str) -> str:
    """The full judge prompt as text (chat template, generation prompt, answer prefix); for inspection."""
    user = USER_TEMPLATE.format(query=query, response_a=response_a, response_b=response_b)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return rendered + ANSWER_PREFIX


@dataclass(frozen=True)
class EncodedPair:
    """One row's judge-prompt token ids."""

    input_ids: list[int]
    truncated: bool
    full_length: int  # length before truncation


@dataclass(frozen=True)
class PromptTemplate:
    """The judge prompt pre-tokenized for one tokenizer; build with `from_tokenizer`."""

    segments: tuple[tuple[int, ...], ...]  # 4 fixed pieces around query, response A, response B
    marker: tuple[int, ...]
    letter_ids: tuple[int, int]
    tokenizer: Any = field(repr=False, compare=False, hash=False)

    @property
    def fixed_length(self) -> int:
        """Tokens of fixed text in every encoding."""
        return sum(len(segment) for segment in self.segments)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PromptTemplate:
        """Render the chat template with placeholders, split it at them and tokenize the fixed pieces."""
        text = render_prompt_text(tokenizer, *(_PLACEHOLDERS[name] for name in FIELDS))
        pieces = []
        rest = text
        for name in FIELDS:
            placeholder = _PLACEHOLDERS[name]
            if text.count(placeholder) != 1:
                raise ValueError(
                    f"chat template of {_tokenizer_name(tokenizer)!r} does not keep the {name} field exactly "
                    f"once in the user message; rendered: {text!r}"
                )
            before, rest = rest.split(placeholder)
            pieces.append(before)
        pieces.append(rest)
        segments = tuple(tuple(_tokenize_fixed(tokenizer, piece)) for piece in pieces)
        marker = tuple(_tokenize_fixed(tokenizer, TRUNCATION_MARKER))
        letters = letter_token_ids(tokenizer)
        return cls(segments=segments, marker=marker, letter_ids=letters, tokenizer=tokenizer)

    def tokenize_fields(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of field texts in one batched tokenizer call; specials in the text stay plain text."""
        if not texts:
            return []
        # Field text is user data: split_special_tokens tokenizes a literal "<|im_end|>" as plain text, so
        # a row cannot close the chat turn early.
        encoded = self.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)
        return [list(ids) for ids in encoded["input_ids"]]

    def encode_ids(
        self,
        prompt_ids: list[int],
        response_a_ids: list[int],
        response_b_ids: list[int],
        *,
        max_length: int,
        rebalance: bool = True,
    ) -> EncodedPair:
        """One row's judge prompt from its field token ids (`tokenize_fields`), middle-cut to `max_length`."""
        budget = max_length - self.fixed_length
        if budget < MIN_FIELD_BUDGET:
            raise ValueError(
                f"max_length {max_length} leaves {budget} tokens for the fields after {self.fixed_length} "
                f"tokens of fixed prompt text; need at least {MIN_FIELD_BUDGET}"
            )
        fields = [prompt_ids, response_a_ids, response_b_ids]
        full_length = self.fixed_length + sum(len(ids) for ids in fields)
        truncated = False
        if full_length > max_length:
            *fields, truncated = truncate_fields(
                *fields, budget=budget, marker=list(self.marker), rebalance=rebalance
            )
        s = self.segments
        input_ids = [*s[0], *fields[0], *s[1], *fields[1], *s[2], *fields[2], *s[3]]
        return EncodedPair(input_ids=input_ids, truncated=truncated, full_length=full_length)


def _tokenize_fixed(tokenizer: Any, text: str) -> list[int]:
    """Token ids of template text; its special tokens (e.g. "<|im_start|>") map to their ids."""
    # add_special_tokens=False: the rendered template already holds any BOS; don't prepend a second.
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The tokenizer in `path`, given a pad token where it ships none (Llama-3, Mistral).

    EOS serves: padded positions are masked out of attention and the head reads each row's last real token,
    so the pad id never reaches a logit.
    """
    from transformers import AutoTokenizer  # here: the prompt's text constants are read without transformers

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{path}: the tokenizer has neither a pad nor an eos token; set pad_token in "
                             "its tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
