"""Raw data: the external files (observed by content hash) and their validated canonical frames."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from arena_assets.assets.metadata import artifact_metadata, column_schema, drop_metadata, language_mix
from arena_assets.ranker.artifacts import atomic_directory, file_sha256, write_manifest
from arena_assets.readers import LMSYS_SOURCES, read_source
from arena_assets.readers.schema import ReaderError
from arena_assets.resources import ArenaSettingsResource
from arena_assets.settings import Settings

ROWS_FILE = "rows.parquet"


@dataclass(frozen=True)
class RawSource:
    """One raw dataset: its asset name, its reader, and where its files are."""

    name: str
    reader: str
    paths: Callable[[Settings], list[Path]]
    description: str


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


def file_key(source: RawSource) -> str:
    """Asset key of the observed external files behind a raw dataset."""
    return f"{source.name}_files"


def files_version(paths: list[Path]) -> str:
    """One content hash over all files of a source (names included, so a renamed file counts)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:24]


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            file_key(s),
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
    """Content-hash data versions of every raw file set."""
    resolved = settings.settings()
    for source in RAW_SOURCES:
        paths = [p for p in source.paths(resolved) if p.is_file()]
        version = files_version(paths) if paths else "missing"
        yield dg.ObserveResult(
            asset_key=file_key(source),
            data_version=dg.DataVersion(version),
            metadata={"files": dg.MetadataValue.json([str(p) for p in paths]), "file_count": len(paths)},
        )


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
        deps=[file_key(source)],
        kinds={"pandas", "parquet"},
        description=source.description,
        code_version="1",
    )
    def _raw_dataset(settings: ArenaSettingsResource) -> dg.MaterializeResult:
        resolved = settings.settings()
        result = read_raw(source, resolved)
        out_dir = resolved.artifact_dir(source.name)
        with atomic_directory(out_dir) as tmp:
            result.frame.to_parquet(tmp / ROWS_FILE, index=False)
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
            **artifact_metadata(out_dir / ROWS_FILE),
        }
        if result.notes:
            metadata["notes"] = dg.MetadataValue.json(dict(result.notes))
        return dg.MaterializeResult(metadata=metadata)

    return _raw_dataset


raw_datasets: list[dg.AssetsDefinition] = [raw_dataset_asset(s) for s in RAW_SOURCES]


def rows_path(settings: Settings, name: str) -> Path:
    """Where a raw dataset asset keeps its canonical rows."""
    return settings.artifact_dir(name) / ROWS_FILE
