"""The embedded default: sample raw files in the real schemas and a tiny random-weight Qwen2 backbone.

`build_embedded_default(settings)` writes both where the settings point, offline and deterministically, so
the demo profile runs end to end without a download. docs/embedded-default.md describes the files and the
preference rule that labels them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from arena_assets.embedded.sample_data import preference_rule_label
from arena_assets.embedded.sources import OPEN_VERSIONS, SampleData, generate_sample_data
from arena_assets.ranker.artifacts import atomic_write_text, file_sha256, source_version
from arena_assets.ranker.prompt import ANSWER_PREFIX, SYSTEM_PROMPT, TRUNCATION_MARKER, USER_TEMPLATE
from arena_assets.settings import Settings

__all__ = [
    "GENERATOR_VERSION",
    "STAMP_NAME",
    "EmbeddedDefault",
    "build_embedded_default",
    "generate_sample_data",
    "preference_rule_label",
    "sample_file_paths",
    "write_sample_data",
]

STAMP_NAME = "embedded_default.json"  # in raw_dir, and in the backbone directory
# The generator's own source: any change to a knob, a word list or the text generator regenerates the files
# (and the backbone, whose tokenizer is trained on them).
GENERATOR_VERSION = source_version(
    *(Path(__file__).with_name(name) for name in ("sample_data.py", "vocab.py", "pairs.py", "sources.py"))
)
# The judge prompt's fixed text appears once per training row, so the tokenizer should see it about as
# often; then its words become whole tokens and the fixed text stays short at max_length 384.
JUDGE_TEXT_REPEATS = 500


@dataclass(frozen=True)
class EmbeddedDefault:
    """Where the embedded default lives, and whether this call (re)wrote it."""

    raw_dir: Path
    files: dict[str, Path]  # wsdm_train, wsdm_test, wsdm_test_labels, lmsys_55k, lmsys_33k, open_v1..v3
    backbone: Path
    stamp: Path
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # awkward-row counts per file
    wrote_data: bool = False
    built_backbone: bool = False

    @property
    def open_model_pairs(self) -> list[Path]:
        """The open-model pair files, v1 first."""
        return [self.files[f"open_{v}"] for v in OPEN_VERSIONS]


def sample_file_paths(settings: Settings) -> dict[str, Path]:
    """Where each sample file goes under the settings' raw paths (README, 'Data')."""
    return {
        "wsdm_train": settings.wsdm_train_path,
        "wsdm_test": settings.wsdm_test_path,
        # Demo only: the real test labels are hidden; these let evaluation score a demo submission.
        "wsdm_test_labels": settings.wsdm_test_path.with_name("test_labels.parquet"),
        "lmsys_55k": settings.lmsys_55k_path,
        "lmsys_33k": settings.lmsys_33k_dir / "additional_33k.csv",
        **{f"open_{v}": settings.open_model_pairs_dir / f"{v}.parquet" for v in OPEN_VERSIONS},
    }


def _frames(data: SampleData) -> dict[str, pd.DataFrame]:
    return {
        "wsdm_train": data.wsdm_train,
        "wsdm_test": data.wsdm_test,
        "wsdm_test_labels": data.wsdm_test_labels,
        "lmsys_55k": data.lmsys_55k,
        "lmsys_33k": data.lmsys_33k,
        **{f"open_{v}": frame for v, frame in data.open_model_pairs.items()},
    }


def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary sibling (no .csv/.parquet suffix, so reader globs skip it) and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        _write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n", encoding="utf-8"))
    else:
        _write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _read_stamp(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _corpus_sha256(corpus: list[str]) -> str:
    return hashlib.sha256("\x00".join(corpus).encode()).hexdigest()


def _refuse_foreign_files(settings: Settings, *, force: bool) -> None:
    """FileExistsError if a target file exists that no earlier build wrote (unless `force`): real data?"""
    if force:
        return
    stamp_path = settings.raw_dir / STAMP_NAME
    ours = set(_read_stamp(stamp_path).get("files", {}))
    foreign = [
        str(path)
        for path in sample_file_paths(settings).values()
        if path.exists() and path.relative_to(settings.raw_dir).as_posix() not in ours
    ]
    if foreign:
        raise FileExistsError(
            f"{', '.join(foreign)} already exist and were not written by the embedded default (no entry in "
            f"{stamp_path}); they may be real data. Point ARENA_RAW_DIR elsewhere, or pass force=True."
        )


def _refuse_foreign_backbone(settings: Settings, *, force: bool) -> None:
    """FileExistsError if the backbone directory holds a model the tiny builder did not write."""
    backbone = settings.backbone
    # The tiny builder writes tiny_model_spec.json; a directory without it is someone's real model.
    if backbone.exists() and not (backbone / "tiny_model_spec.json").is_file() and not force:
        raise FileExistsError(
            f"{backbone} exists and is not the embedded tiny model; point ARENA_BACKBONE elsewhere, or pass "
            "force=True."
        )


def write_sample_data(data: SampleData, settings: Settings, *, force: bool = False) -> dict[str, str]:
    """Write every sample file atomically and the stamp last; return {path under raw_dir: sha256}.

    Refuses (FileExistsError) to replace a file that an earlier call did not write, unless `force`: the
    raw paths of a real profile hold real data.
    """
    stamp_path = settings.raw_dir / STAMP_NAME
    old = _read_stamp(stamp_path)
    ours = set(old.get("files", {}))
    _refuse_foreign_files(settings, force=force)
    paths = sample_file_paths(settings)
    rel = {key: path.relative_to(settings.raw_dir).as_posix() for key, path in paths.items()}
    base = {"generator_version": GENERATOR_VERSION, "seed": settings.data_seed}
    # Listed before writing, so files of an interrupted run still count as ours next time.
    pending = {**old.get("files", {}), **dict.fromkeys(rel.values())}
    atomic_write_text(stamp_path, json.dumps({**base, "status": "writing", "files": pending}, indent=2))
    for key, frame in _frames(data).items():
        _write_frame(frame, paths[key])
    for stale in ours - set(rel.values()):  # files an older generator version wrote and this one does not
        (settings.raw_dir / stale).unlink(missing_ok=True)
    hashes = {rel[key]: file_sha256(paths[key]) for key in paths}
    stamp = {**base, "status": "complete", "files": hashes, "corpus_sha256": _corpus_sha256(data.corpus)}
    atomic_write_text(stamp_path, json.dumps({**stamp, "stats": data.stats}, indent=2))
    return hashes


def judge_prompt_text() -> str:
    """The fixed text of the ranker's judge prompt, as the tokenizer will meet it."""
    user = USER_TEMPLATE.format(query="", response_a="", response_b="")
    return "\n".join(["system", SYSTEM_PROMPT, "user", user, "assistant", ANSWER_PREFIX, TRUNCATION_MARKER])


def build_embedded_default(settings: Settings, *, force: bool = False) -> EmbeddedDefault:
    """Write the sample raw files and the tiny backbone where `settings` point; skip what is current."""
    paths = sample_file_paths(settings)
    stamp_path = settings.raw_dir / STAMP_NAME
    backbone_stamp_path = settings.backbone / STAMP_NAME
    stamp = _read_stamp(stamp_path)
    wanted = {"generator_version": GENERATOR_VERSION, "seed": settings.data_seed}
    data_current = (
        not force
        and stamp.get("status") == "complete"
        and all(stamp.get(k) == v for k, v in wanted.items())
        and all(p.is_file() for p in paths.values())
    )
    # Both checks come first, so a refusal costs no generation time and leaves everything untouched.
    _refuse_foreign_files(settings, force=force)
    _refuse_foreign_backbone(settings, force=force)
    data = None
    if not data_current:
        data = generate_sample_data(settings.data_seed)
        write_sample_data(data, settings, force=force)
        stamp = _read_stamp(stamp_path)

    backbone_stamp = _read_stamp(backbone_stamp_path)
    backbone_current = not force and backbone_stamp == {**wanted, "corpus_sha256": stamp["corpus_sha256"]}
    if not backbone_current:
        # Imported here: torch and transformers take seconds to load, and the data side needs neither.
        from arena_assets.embedded.tiny_model import build_tiny_backbone

        data = data or generate_sample_data(settings.data_seed)
        corpus = [*data.corpus, *[judge_prompt_text()] * JUDGE_TEXT_REPEATS]
        build_tiny_backbone(settings.backbone, corpus, seed=settings.data_seed)
        atomic_write_text(
            backbone_stamp_path,
            json.dumps({**wanted, "corpus_sha256": _corpus_sha256(data.corpus)}, indent=2),
        )
    return EmbeddedDefault(
        raw_dir=settings.raw_dir,
        files=paths,
        backbone=settings.backbone,
        stamp=stamp_path,
        stats=stamp.get("stats", {}),
        wrote_data=not data_current,
        built_backbone=not backbone_current,
    )
