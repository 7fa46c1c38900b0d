"""The embedded default of the session's demo project (built once, in the root conftest), and its settings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from arena_assets.embedded import EmbeddedDefault, build_embedded_default
from arena_assets.settings import Settings


def demo_settings(project_dir: Path) -> Settings:
    """Demo settings rooted at `project_dir`; explicit values so a developer's .env cannot leak in."""
    return Settings(
        profile="demo",
        project_dir=project_dir,
        raw_dir=Path("data/raw/demo"),
        backbone=Path("data/embedded/tiny-qwen2"),
        artifact_root=Path("data/artifacts"),
        seed=42,
    )


@pytest.fixture(scope="session")
def settings(demo_project: Path) -> Settings:
    """Settings of the session's embedded default."""
    return demo_settings(demo_project)


@pytest.fixture(scope="session")
def embedded(settings: Settings) -> EmbeddedDefault:
    """The embedded default (sample files and tiny backbone): the demo project's build, found current.

    The tests here only read it; building a second copy would cost seconds of data generation and
    tokenizer training for the same bytes.
    """
    return build_embedded_default(settings)


def joined_turns(cell: str) -> str:
    """An LMSYS JSON list of turns as one text, null turns left out."""
    return "\n\n".join(turn for turn in json.loads(cell) if turn)


@pytest.fixture(scope="session")
def hard_labelled(embedded: EmbeddedDefault) -> pd.DataFrame:
    """WSDM train plus the non-tie LMSYS rows (turns joined): response_a, response_b, winner, source."""
    wsdm = pd.read_parquet(embedded.files["wsdm_train"]).assign(source="wsdm_train")
    frames = [wsdm[["response_a", "response_b", "winner", "source"]]]
    for key in ("lmsys_55k", "lmsys_33k"):
        raw = pd.read_csv(embedded.files[key])
        raw = raw[raw["winner_tie"] == 0]
        frames.append(
            pd.DataFrame(
                {
                    "response_a": raw["response_a"].map(joined_turns),
                    "response_b": raw["response_b"].map(joined_turns),
                    "winner": raw["winner_model_a"].map({1: "model_a", 0: "model_b"}),
                    "source": key,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
