"""What travels with a model: a card (README.md) that says how to prompt and score it, and `ranker.json`,
the same facts for programs (the predictor reads its max length there).

Paths on this machine never enter either file: the backbone is named by its directory's name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arena_assets.ranker.prompt import ANSWER_PREFIX, LETTERS, SYSTEM_PROMPT, TRUNCATION_MARKER, USER_TEMPLATE
from arena_assets.ranker.truncation import (
    PROMPT_HEAD_SHARE,
    PROMPT_SHARE,
    RESPONSE_HEAD_SHARE,
    RESPONSE_SHARE,
)

CARD_NAME = "README.md"
RANKER_NAME = "ranker.json"

SNIPPET = """\
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = "{model_dir}"
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
ranker = json.load(open(f"{{model_dir}}/ranker.json"))

def p_b_wins(query: str, response_a: str, response_b: str) -> float:
    user = ranker["user_template"].format(query=query, response_a=response_a, response_b=response_b)
    messages = [{{"role": "system", "content": ranker["system_prompt"]}}, {{"role": "user", "content": user}}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text + ranker["answer_prefix"], add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    letters = [tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ranker["letters"]]
    return torch.softmax(logits[letters].float(), dim=-1)[1].item()
"""


def ranker_facts(*, backbone: str, max_length: int) -> dict[str, Any]:
    """The judge prompt, the answer letters and the truncation rule the model was trained with."""
    return {
        "backbone": Path(backbone).name,
        "max_length": max_length,
        "system_prompt": SYSTEM_PROMPT,
        "user_template": USER_TEMPLATE,
        "answer_prefix": ANSWER_PREFIX,
        "letters": list(LETTERS),
        "truncation": {
            "marker": TRUNCATION_MARKER,
            "query_cap": PROMPT_SHARE,
            "query_head": PROMPT_SHARE * PROMPT_HEAD_SHARE,
            "response_cap": RESPONSE_SHARE,
            "response_head": RESPONSE_SHARE * RESPONSE_HEAD_SHARE,
        },
    }


def write_card(
    directory: Path, *, kind: str, backbone: str, max_length: int, metrics: dict[str, Any], data: str
) -> None:
    """README.md and ranker.json for a `kind` ("LoRA adapter" or "merged model") in `directory`."""
    facts = ranker_facts(backbone=backbone, max_length=max_length)
    (directory / RANKER_NAME).write_text(json.dumps(facts, indent=2, ensure_ascii=False))
    figures = "\n".join(
        f"| {name} | {value:.4f} |"
        for name, value in metrics.items()
        if name.startswith("val_") and isinstance(value, int | float) and not isinstance(value, bool)
    )
    cut = facts["truncation"]
    loading = (
        "Load it on its backbone with `peft.PeftModel.from_pretrained(base, this_directory)`, or use "
        "the merged model the pipeline makes of it."
        if kind == "LoRA adapter"
        else "It loads with plain `AutoModelForCausalLM.from_pretrained(this_directory)`."
    )
    card = f"""# Chatbot-arena preference ranker ({kind})

Given a user query and two responses, this model predicts which one a person preferred: after a judge prompt,
its next-token logits for "{LETTERS[0].strip()}" and "{LETTERS[1].strip()}" (the tokens `{LETTERS[0]!r}` and
`{LETTERS[1]!r}`) are the scores of response A and response B. It is `{facts["backbone"]}` fine-tuned with
LoRA by arena-assets on {data}. {loading}

## The prompt

A chat with a system message and a user message, through the tokenizer's chat template with the generation
prompt, then `{ANSWER_PREFIX}`. The next token decides. System message:

> {SYSTEM_PROMPT}

User message (`{{query}}`, `{{response_a}}`, `{{response_b}}` are the texts):

```
{USER_TEMPLATE}
```

## Truncation

The whole prompt keeps at most {max_length} tokens. When it is longer, with R the tokens left after the fixed
text: a query over {cut["query_cap"]:g}R keeps its first {cut["query_head"]:g}R and last
{cut["query_cap"] - cut["query_head"]:g}R tokens, a response over {cut["response_cap"]:g}R its first
{cut["response_head"]:g}R and last {cut["response_cap"] - cut["response_head"]:g}R, each around the marker
{TRUNCATION_MARKER.strip()!r}; budget that short fields leave unused goes to the long ones.
`ranker.json` holds these numbers and the texts above.

## Scoring one pair with plain transformers

For a pair that needs no truncation (`arena predict` applies the cut, and averages both orders):

```python
import json

{SNIPPET.format(model_dir=".")}
print(p_b_wins("What is 2 + 2?", "It is 4.", "It is 5."))  # P(response B preferred)
```

## Validation

| metric | value |
|---|---|
{figures or "| (none) | |"}
"""
    (directory / CARD_NAME).write_text(card)


def portable_adapter_config(directory: Path, backbone: str) -> None:
    """Name the base model in adapter_config.json by its directory's name, not this machine's path."""
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = Path(backbone).name
    path.write_text(json.dumps(config, indent=2))


def carried_facts(adapter_dir: Path) -> tuple[int | None, dict[str, Any], str]:
    """The training max length, metrics and data line an adapter's files record, for its merged model."""
    facts = adapter_dir / RANKER_NAME
    metrics_path = adapter_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    max_length = json.loads(facts.read_text())["max_length"] if facts.is_file() else None
    rows = metrics.get("train_rows")
    return max_length, metrics, f"{rows:,} training rows" if rows else "the adapter's training rows"
