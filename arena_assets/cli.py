"""The `arena` console script.

arena validate --source S [--json] FILE...   check raw files before a long run
arena build-demo [--force]                   build the embedded default (tiny model + sample data)
arena observe                                record the raw files' content hashes in the Dagster home
arena predict --model DIR IN OUT             winner probabilities for a parquet or CSV of pairs
arena predict --model DIR --prompt P --response-a A --response-b B    ... for one pair
arena bundle --model DIR OUT                 the model, the package's wheel and a predict script, offline
arena where                                  print where the settings point and what has been built
"""

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


def cmd_build_demo(args: argparse.Namespace) -> int:
    """Build the embedded default where the settings point (skipped when already built)."""
    from arena_assets.embedded import build_embedded_default
    from arena_assets.settings import load_settings

    settings = load_settings()
    built = build_embedded_default(settings, force=args.force)
    state = "built" if built.wrote_data or built.built_backbone else "already built, unchanged"
    print(f"embedded default {state}:\n  raw files  {built.raw_dir}\n  backbone   {built.backbone}")
    return EXIT_OK


def cmd_observe(args: argparse.Namespace) -> int:
    """Report the raw file sets whose content changed to the Dagster home, as the sensor does (no run)."""
    import dagster as dg

    from arena_assets.assets.data import changed_observations
    from arena_assets.settings import load_settings

    instance = dg.DagsterInstance.get()  # DAGSTER_HOME; the Makefile exports the project's
    observations = changed_observations(instance, load_settings())
    for observation in observations:
        instance.report_runless_asset_event(observation)
        version = observation.tags["dagster/data_version"]
        print(f"observed {observation.asset_key.to_user_string()}: {version}")
    if not observations:
        print("raw files unchanged since the last observation")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict a file of pairs (or one pair) with a merged model; no Dagster involved."""
    from arena_assets.ranker.config import PredictConfig
    from arena_assets.ranker.predict import predict, predict_one

    single = (args.prompt, args.response_a, args.response_b)
    if (args.input is None) == all(text is None for text in single) or (
        args.input is None and None in single
    ):
        print("error: give IN OUT, or --prompt, --response-a and --response-b", file=sys.stderr)
        return EXIT_BAD_INPUT
    config = PredictConfig(
        model=str(args.model),
        input_path=str(args.input or ""),
        output_path=str(args.output or ""),
        submission_path=str(args.submission or ""),
        id_column=args.id_column,
        max_length=args.max_length,
        precision=args.precision,
        device_map=args.device_map,
        tta_share=args.tta_share,
        tta_seconds=args.tta_seconds,
        pack_sequences=args.pack_sequences,
    )
    if args.input is None:
        print(json.dumps(predict_one(config, *single), default=float))
    else:
        print(json.dumps(predict(config)))
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    """Write an offline bundle: the model, this package as a wheel, and a predict script."""
    from arena_assets.bundle import write_bundle

    out = write_bundle(args.model, args.out)
    print(
        f"bundle written: {out}\n  run: python {out / 'predict.py'} --test test.parquet --out submission.csv"
    )
    return EXIT_OK


def cmd_where(args: argparse.Namespace) -> int:
    """Print the profile, its paths, and each asset's artifact directory with its state."""
    from arena_assets.assets import layout
    from arena_assets.settings import load_settings

    settings = load_settings()
    print(
        f"profile        {settings.profile}\nbackbone       {settings.backbone}\n"
        f"raw files      {settings.raw_dir}"
    )
    print(f"artifacts      {settings.artifact_root}")
    if settings.artifact_root.is_dir():
        for directory in sorted(
            p for p in settings.artifact_root.iterdir() if p.is_dir() and layout.TMP_MARK not in p.name
        ):
            done = any(directory.glob(layout.MANIFEST_NAME)) or any(
                directory.glob(f"*/{layout.MANIFEST_NAME}")
            )
            print(f"  {directory.name:<24} {'done' if done else 'unfinished'}  {directory}")
    for name, path in (
        ("submission", layout.submission_path(settings)),
        ("evaluation", layout.report_path(settings)),
    ):
        if path.is_file():
            print(f"{name:<15}{path}")
    print("UI             make dev, then http://127.0.0.1:3000 (DAGSTER_HOME=.dagster_home)")
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

    build_demo = commands.add_parser("build-demo", help="build the embedded tiny model and sample raw files")
    build_demo.add_argument("--force", action="store_true", help="rebuild even if present (overwrites)")
    build_demo.set_defaults(func=cmd_build_demo)

    observe = commands.add_parser("observe", help="record the raw files' content hashes (no Dagster run)")
    observe.set_defaults(func=cmd_observe)

    predict = commands.add_parser("predict", help="winner probabilities for pairs with a merged model")
    predict.add_argument("--model", required=True, type=Path, help="merged model directory (final_model)")
    predict.add_argument("input", nargs="?", type=Path, metavar="IN", help="parquet or CSV of pairs")
    predict.add_argument("output", nargs="?", type=Path, metavar="OUT", help="CSV of probabilities")
    predict.add_argument("--submission", type=Path, help="also write the Kaggle id,winner CSV here")
    predict.add_argument("--prompt", help="one pair instead of a file: the query")
    predict.add_argument("--response-a")
    predict.add_argument("--response-b")
    predict.add_argument("--id-column", default="id")
    predict.add_argument("--max-length", type=int, default=0, help="0: the length the model trained with")
    predict.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    predict.add_argument(
        "--device-map",
        default="single",
        choices=["single", "auto"],
        help="auto: spread a model too large for one GPU over all of them",
    )
    predict.add_argument(
        "--tta-share", type=float, default=1.0, help="rows also scored swapped, least sure first"
    )
    predict.add_argument("--tta-seconds", type=float, default=0.0, help="time for the swapped pass; 0: none")
    predict.add_argument(
        "--pack-sequences",
        action="store_true",
        help="rows end to end, no padding, the system prompt once a pass (a GPU from Ampere on, or the CPU)",
    )
    predict.set_defaults(func=cmd_predict)

    bundle = commands.add_parser("bundle", help="model + wheel + script for an offline notebook")
    bundle.add_argument("--model", required=True, type=Path, help="merged model directory (final_model)")
    bundle.add_argument("out", type=Path, help="directory to write")
    bundle.set_defaults(func=cmd_bundle)

    where = commands.add_parser("where", help="print where the settings point and what has been built")
    where.set_defaults(func=cmd_where)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `arena` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
