"""Data: the raw files (observed by content hash), their canonical frames, and the hard-label set with
the checks that guard it before any GPU step reads it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from arena_assets import hard_labels, readers
from arena_assets.assets import layout
from arena_assets.assets.gpu_steps import ranker_config
from arena_assets.assets.metadata import (
    artifact_metadata,
    column_schema,
    count_table,
    drop_metadata,
    label_balance,
    language_mix,
)
from arena_assets.hard_labels import build_hard_label_set
from arena_assets.ranker.artifacts import atomic_directory, file_sha256, source_version, write_manifest
from arena_assets.ranker.config import TrainConfig
from arena_assets.ranker.data import broken_swap_pairs, normalise
from arena_assets.readers import LMSYS_SOURCES, read_source
from arena_assets.readers.schema import CANONICAL_COLUMNS, WINNERS, ReaderError
from arena_assets.resources import ArenaSettingsResource
from arena_assets.settings import Settings

# The code the data assets run: the readers, the hard-label builder and this module.
READERS_DIR, HARD_LABELS_MODULE = Path(readers.__file__).parent, Path(hard_labels.__file__)
DATA_CODE_VERSION = source_version(READERS_DIR, HARD_LABELS_MODULE, Path(__file__))
DATA_VERSION_TAG = "dagster/data_version"  # where an observation records its data version
HARD_LABEL_SOURCES = ("wsdm_train", "lmsys_55k", "lmsys_33k")  # priority order for duplicates
HARD_LABEL_COLUMNS = (*CANONICAL_COLUMNS, "pair_id", "is_swapped")
LABEL_SHARE_BOUNDS = (0.3, 0.7)  # share of B wins among original rows; outside it the data is suspicious


@dataclass(frozen=True)
class RawSource:
    """One raw dataset: its asset name, its reader, and where its files are."""

    name: str
    reader: str
    paths: Callable[[Settings], list[Path]]
    description: str

    @property
    def file_key(self) -> str:
        """Asset key of the observed external files behind this dataset."""
        return f"{self.name}_files"


RAW_SOURCES: tuple[RawSource, ...] = (
    RawSource(
        "wsdm_train",
        "wsdm_train",
        lambda s: [s.wsdm_train_path],
        "WSDM Cup train set: one row per human-judged (prompt, A, B), winner model_a/model_b.",
    ),
    RawSource(
        "wsdm_test",
        "wsdm_test",
        lambda s: [s.wsdm_test_path],
        "WSDM Cup test set: one row per pair to predict; no winner; every row kept.",
    ),
    RawSource(
        "lmsys_55k",
        "lmsys_55k",
        lambda s: [s.lmsys_55k_path],
        "LMSYS arena 55k: one row per judged pair, turns joined by the multi-turn policy, ties dropped.",
    ),
    RawSource(
        "lmsys_33k",
        "lmsys_33k",
        lambda s: s.lmsys_33k_paths(),
        "Additional 33k arena conversations (LMSYS layout): same grain and policy as lmsys_55k.",
    ),
    RawSource(
        "open_model_pairs",
        "open_model",
        lambda s: s.open_model_pair_paths(),
        "Unlabelled open-model response pairs (all version files): one row per pair, no winner.",
    ),
)


def files_version(paths: list[Path]) -> str:
    """One content hash over all files of a source (names included, so a renamed file counts)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:24]


def observe_raw_files(settings: Settings) -> list[dg.ObserveResult]:
    """One observation per raw file set: its content-hash data version, file list and count."""
    results = []
    for source in RAW_SOURCES:
        paths = [p for p in source.paths(settings) if p.is_file()]
        results.append(
            dg.ObserveResult(
                asset_key=source.file_key,
                data_version=dg.DataVersion(files_version(paths) if paths else "missing"),
                metadata={"files": dg.MetadataValue.json([str(p) for p in paths]), "file_count": len(paths)},
            )
        )
    return results


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            s.file_key,
            group_name="raw_files",
            description=f"External file(s) behind {s.name}.",
            kinds={"file"},
        )
        for s in RAW_SOURCES
    ],
    name="raw_files",
    description="Observes the raw input files; a new content hash marks everything downstream stale.",
)
def raw_files(settings: ArenaSettingsResource):
    """Content-hash data versions of every raw file set (the UI's Observe; the sensor needs no run)."""
    yield from observe_raw_files(settings.settings())


def changed_observations(instance: dg.DagsterInstance, settings: Settings) -> list[dg.AssetObservation]:
    """Observations of the raw file sets whose data version differs from the one last recorded."""
    changed = []
    for result in observe_raw_files(settings):
        key = dg.AssetKey.from_coercible(result.asset_key)
        record = instance.get_latest_data_version_record(key, is_source=True)
        version = result.data_version.value
        recorded = (record.event_log_entry.tags or {}).get(DATA_VERSION_TAG) if record else None
        if recorded != version:
            changed.append(
                dg.AssetObservation(asset_key=key, metadata=result.metadata, tags={DATA_VERSION_TAG: version})
            )
    return changed


def read_raw(source: RawSource, settings: Settings):
    """Read a source with its reader; an unusable file fails the step with the reader's message."""
    paths = source.paths(settings)
    if not paths:
        raise dg.Failure(
            f"{source.name}: no files found where the settings point ({settings.raw_dir}). "
            "Run `arena build-demo` for the sample data, or place the real files (README, 'Data')."
        )
    kwargs = {"multi_turn": settings.multi_turn_policy} if source.reader in LMSYS_SOURCES else {}
    try:
        return read_source(source.reader, paths, **kwargs)
    except ReaderError as error:
        raise dg.Failure(description=str(error)) from error


def raw_dataset_asset(source: RawSource) -> dg.AssetsDefinition:
    """The canonical-frame asset of one raw source."""

    @dg.asset(
        name=source.name,
        group_name="data",
        deps=[source.file_key],
        kinds={"pandas", "parquet"},
        description=source.description,
        code_version=DATA_CODE_VERSION,
    )
    def _raw_dataset(settings: ArenaSettingsResource) -> dg.MaterializeResult:
        resolved = settings.settings()
        result = read_raw(source, resolved)
        rows = layout.rows_path(resolved, source.name)
        with atomic_directory(rows.parent) as tmp:
            result.frame.to_parquet(tmp / rows.name, index=False)
            write_manifest(
                tmp,
                config={"reader": source.reader, "multi_turn": resolved.multi_turn_policy},
                inputs={str(p): file_sha256(p) for p in result.files},
            )
        metadata = {
            "dagster/row_count": result.rows_kept,
            "rows_read": result.rows_read,
            "rows_kept": result.rows_kept,
            **drop_metadata(result.drops),
            "language_mix": language_mix(result.frame),
            "files": dg.MetadataValue.json([str(p) for p in result.files]),
            "dagster/column_schema": column_schema(result.frame),
            **artifact_metadata(rows),
        }
        if result.notes:
            metadata["notes"] = dg.MetadataValue.json(dict(result.notes))
        return dg.MaterializeResult(metadata=metadata)

    return _raw_dataset


def token_length_metadata(settings: Settings, frame: pd.DataFrame) -> dict[str, Any]:
    """Token-length percentiles and truncation rate of the judge prompts at stage 1's max_length."""
    from transformers import AutoTokenizer  # seconds to import; only this asset needs it

    from arena_assets.ranker.data import encode_frame
    from arena_assets.ranker.prompt import PromptTemplate

    if not (settings.backbone / "tokenizer_config.json").is_file():
        raise dg.Failure(
            f"no tokenizer at {settings.backbone}: build the embedded default (`arena build-demo`) "
            "or point ARENA_BACKBONE at a Hugging Face model directory"
        )
    max_length = ranker_config(TrainConfig, settings, "stage1").max_length
    template = PromptTemplate.from_tokenizer(AutoTokenizer.from_pretrained(settings.backbone))
    encoded = encode_frame(template, frame, max_length=max_length, rebalance=True)
    return {"max_length": max_length, **{k: round(v, 4) for k, v in encoded.length_report().items()}}


@dg.asset(
    group_name="data",
    deps=list(HARD_LABEL_SOURCES),
    kinds={"pandas", "parquet"},
    code_version=DATA_CODE_VERSION,
)
def hard_label_set(settings: ArenaSettingsResource) -> dg.MaterializeResult:
    """Stage-1 rows: one per human-judged (prompt, A, B), deduplicated across sources, ties dropped; each
    train row is followed by its A/B swap (same pair_id, label flipped); validation is split by prompt."""
    resolved = settings.settings()
    sources = [layout.rows_path(resolved, name) for name in HARD_LABEL_SOURCES]
    built = build_hard_label_set(
        [pd.read_parquet(p) for p in sources],
        validation_fraction=resolved.validation_fraction,
        seed=resolved.data_seed,
    )
    train_path, validation_path = layout.hard_label_paths(resolved)
    with atomic_directory(train_path.parent) as tmp:
        built.train.to_parquet(tmp / train_path.name, index=False)
        built.validation.to_parquet(tmp / validation_path.name, index=False)
        write_manifest(
            tmp,
            config={"validation_fraction": resolved.validation_fraction, "seed": resolved.data_seed},
            inputs={name: file_sha256(p) for name, p in zip(HARD_LABEL_SOURCES, sources, strict=True)},
        )
    originals = built.train[~built.train["is_swapped"]]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(built.train),
            "train_rows": len(built.train),
            "train_pairs": len(originals),
            "validation_rows": len(built.validation),
            "rows_in": built.rows_in,
            **drop_metadata(built.drops),
            **label_balance(originals),
            "source_mix": count_table(
                originals["source"].value_counts().to_dict(), key="source", total=len(originals)
            ),
            "language_mix": language_mix(originals),
            **token_length_metadata(resolved, originals),
            "dagster/column_schema": column_schema(built.train),
            **artifact_metadata(train_path.parent),
        }
    )


def _hard_label_frames(settings: ArenaSettingsResource) -> dict[str, pd.DataFrame]:
    """The hard-label set's train and validation frames by file name, in that order."""
    return {p.name: pd.read_parquet(p) for p in layout.hard_label_paths(settings.settings())}


@dg.asset_check(asset=hard_label_set, blocking=True)
def hard_label_schema(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Both splits have the canonical columns plus pair_id/is_swapped, and every winner is model_a/model_b."""
    problems = {}
    for name, frame in _hard_label_frames(settings).items():
        missing = [c for c in HARD_LABEL_COLUMNS if c not in frame.columns]
        bad_winners = int((~frame["winner"].isin(WINNERS)).sum()) if "winner" in frame else len(frame)
        if missing or bad_winners:
            problems[name] = {"missing_columns": missing, "rows_without_winner": bad_winners}
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


@dg.asset_check(asset=hard_label_set)
def label_balance_within_bounds(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """The share of B wins among original training rows lies within LABEL_SHARE_BOUNDS."""
    train, _ = _hard_label_frames(settings).values()
    share = float((train.loc[~train["is_swapped"], "winner"] == "model_b").mean())
    low, high = LABEL_SHARE_BOUNDS
    return dg.AssetCheckResult(
        passed=low <= share <= high,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"observed_share_b": share, "expected_low": low, "expected_high": high},
    )


@dg.asset_check(asset=hard_label_set, blocking=True)
def no_prompt_in_both_splits(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """No normalised prompt appears in both the train and the validation split."""
    train, validation = _hard_label_frames(settings).values()
    shared = set(normalise(train["prompt"])) & set(normalise(validation["prompt"]))
    return dg.AssetCheckResult(
        passed=not shared, metadata={"observed_shared_prompts": len(shared), "expected_shared_prompts": 0}
    )


@dg.asset_check(asset=hard_label_set, blocking=True)
def swap_pairs_complete(settings: ArenaSettingsResource) -> dg.AssetCheckResult:
    """Train rows come as (original, swap) pairs: one pair_id, responses exchanged, label flipped."""
    train, _ = _hard_label_frames(settings).values()
    if len(train) % 2:
        metadata = {"observed_rows": len(train), "expected": "even count"}
        return dg.AssetCheckResult(passed=False, metadata=metadata)
    broken = broken_swap_pairs(train)
    return dg.AssetCheckResult(
        passed=not broken.any(),
        metadata={
            "observed_broken_pairs": int(broken.sum()),
            "expected_broken_pairs": 0,
            "pairs": len(broken),
        },
    )


ASSETS = [raw_files, *(raw_dataset_asset(s) for s in RAW_SOURCES), hard_label_set]
CHECKS = [hard_label_schema, label_balance_within_bounds, no_prompt_in_both_splits, swap_pairs_complete]
