"""The embedded default backbone: a tiny Qwen2-architecture causal LM and a locally trained tokenizer.

Saved with `save_pretrained` exactly like a Hugging Face checkpoint directory, so the code that loads it
is the code that loads Qwen2.5-14B-Instruct. Deterministic for a given corpus and seed. The same builder
makes a tiny Llama-3-style backbone (its chat format, and no pad token, as Llama-3 and Mistral ship) so the
tests hold the ranker to "any Qwen2/Llama-style backbone".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from arena_assets.ranker.artifacts import atomic_directory


@dataclass(frozen=True)
class ChatFormat:
    """A model family's special tokens and chat template, reduced to what the judge prompt uses."""

    special_tokens: tuple[str, ...]
    eos_token: str
    pad_token: str | None  # None: the tokenizer ships without one, like Llama-3's and Mistral's
    template: str


CHAT_FORMATS = {
    "qwen2": ChatFormat(
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        template=(
            "{%- for message in messages %}"
            "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
            "{%- endfor %}"
            "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
        ),
    ),
    "llama": ChatFormat(
        special_tokens=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        eos_token="<|eot_id|>",
        pad_token=None,
        template=(
            "{{- '<|begin_of_text|>' }}"
            "{%- for message in messages %}"
            "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content']"
            " + '<|eot_id|>' }}"
            "{%- endfor %}"
            "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
            "{%- endif %}"
        ),
    ),
}
ARCHITECTURES = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the embedded model: Qwen2 layout, small enough to train on two CPU cores in minutes."""

    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    architecture: Literal["qwen2", "llama"] = "qwen2"


def train_tokenizer(
    corpus: Iterable[str], vocab_size: int, chat: ChatFormat = CHAT_FORMATS["qwen2"]
) -> PreTrainedTokenizerFast:
    """Byte-level BPE like Qwen's, trained on `corpus`; " A" and " B" come out as single tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(chat.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The answer letters must each be one token whatever the corpus holds, as they are in Qwen's vocabulary.
    letters = [" A", " B", "A", "B"] * 64
    tokenizer.train_from_iterator([*corpus, *letters], trainer=trainer)
    named = (chat.eos_token, chat.pad_token)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=chat.eos_token,
        pad_token=chat.pad_token,
        additional_special_tokens=[t for t in chat.special_tokens if t not in named],
    )
    wrapped.chat_template = chat.template
    wrapped.padding_side = "right"
    return wrapped


def build_tiny_backbone(
    output_dir: Path, corpus: Iterable[str], *, seed: int = 0, spec: TinyModelSpec | None = None
) -> Path:
    """Train the tokenizer on `corpus`, initialise the model with `seed`, save both to `output_dir`."""
    spec = spec or TinyModelSpec()
    tokenizer = train_tokenizer(corpus, spec.vocab_size, CHAT_FORMATS[spec.architecture])
    config_class, model_class = ARCHITECTURES[spec.architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta,
        rms_norm_eps=spec.rms_norm_eps,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = model_class(config)
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny_model_spec.json").write_text(json.dumps({"seed": seed, **asdict(spec)}, indent=2))
    return output_dir
