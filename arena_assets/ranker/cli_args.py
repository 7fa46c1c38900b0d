"""Command lines of the ranker's entry points: a config file, and any field on top as its own flag.

    python -m arena_assets.ranker.trainer --config train.yaml --lora_r 32 --max_length 2048

Flags come from the config dataclass through transformers' HfArgumentParser (the flags Hugging Face
scripts use); a flag given on the command line wins over the file, the file over the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import TypeVar

from transformers import HfArgumentParser

from arena_assets.ranker.config import config_from_dict, load_config

C = TypeVar("C")


def parse_config(cls: type[C], argv: Sequence[str] | None = None, *, description: str | None = None) -> C:
    """`cls` from `--config FILE` (optional) and per-field flags, the flags winning."""
    parser = HfArgumentParser(cls, description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"{cls.__name__} as JSON or YAML; flags override its fields")
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = vars(parser.parse_args(argv))
    flags = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    # The fields the command line named (a boolean's --no_x counts for x), over the file's values.
    given = {a.dest for a in parser._actions if flags & set(a.option_strings)} - {"config", "help"}
    values = dataclasses.asdict(load_config(cls, parsed["config"])) if parsed["config"] else {}
    values.update({name: parsed[name] for name in given})
    return config_from_dict(cls, values)
