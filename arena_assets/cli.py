"""The `arena` console script: `arena validate --source S FILE...` (more subcommands join the parser)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arena_assets.readers import LMSYS_SOURCES, READERS, read_source
from arena_assets.readers.schema import MultiTurnPolicy, ReaderError

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # argparse uses 2 for usage errors too: "your input cannot be used"


def _print_table(summary: dict[str, Any]) -> None:
    """A readable report of one validation: counts right-aligned in one column."""
    rows: list[tuple[str, int | None]] = [
        ("rows read", summary["rows_read"]),
        ("rows kept", summary["rows_kept"]),
    ]
    for title in ("drops", "notes"):
        if summary[title]:
            rows.append((f"{title}:", None))
            rows.extend((f"  {reason}", count) for reason, count in summary[title].items())
    width = max(len(label) for label, _ in rows)
    print(f"{'source':<{width}}  {summary['source']}")
    for i, name in enumerate(summary["files"]):
        print(f"{'files' if i == 0 else '':<{width}}  {name}")
    for label, count in rows:
        print(label if count is None else f"{label:<{width}}  {count:>10,}")


def cmd_validate(args: argparse.Namespace) -> int:
    """Read FILE... as one source and report rows read, kept and dropped by reason."""
    kw: dict[str, object] = {}
    if args.multi_turn is not None:
        if args.source not in LMSYS_SOURCES:
            print(f"error: --multi-turn applies to {', '.join(sorted(LMSYS_SOURCES))} only", file=sys.stderr)
            return EXIT_BAD_INPUT
        kw["multi_turn"] = args.multi_turn
    try:
        result = read_source(args.source, args.files, **kw)
    except ReaderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = {"source": args.source, **result.summary()}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        _print_table(summary)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The `arena` parser; each subcommand sets `func(args) -> exit code`."""
    parser = argparse.ArgumentParser(prog="arena", description="Chatbot-arena ranker tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check raw files of one source and count drops by reason")
    validate.add_argument(
        "--source", required=True, choices=list(READERS), help="which layout the files have"
    )
    validate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    validate.add_argument(
        "--multi-turn",
        choices=[p.value for p in MultiTurnPolicy],
        default=None,
        help="LMSYS sources: join turns (default), keep the first, or drop multi-turn rows",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `arena` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
