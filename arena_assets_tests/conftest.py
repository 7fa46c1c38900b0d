"""Shared fixtures: a fixed seed for every test and the embedded tiny backbone, built once per session."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from arena_assets.embedded.tiny_model import build_tiny_backbone

# Sentence frames and fillers per script, so the tokenizer learns merges for Latin, Cyrillic and CJK text
# the way the arena data mixes them.
_FRAMES = {
    "en": (
        "The {0} explains how to {1} in a few clear steps.",
        ["assistant", "teacher", "guide", "answer"],
        ["sort a list", "write a poem", "fix the bug", "cook rice", "learn Python"],
    ),
    "de": (
        "Der {0} erklärt, wie man {1} kann.",
        ["Assistent", "Lehrer", "Text", "Nutzer"],
        ["eine Liste sortieren", "ein Gedicht schreiben", "den Fehler beheben", "Reis kochen"],
    ),
    "fr": (
        "Le {0} explique comment {1} rapidement.",
        ["modèle", "professeur", "guide", "texte"],
        ["trier une liste", "écrire un poème", "corriger le bug", "cuisiner du riz"],
    ),
    "es": (
        "El {0} explica cómo {1} paso a paso.",
        ["asistente", "profesor", "modelo", "usuario"],
        ["ordenar una lista", "escribir un poema", "arreglar el error", "cocinar arroz"],
    ),
    "ru": (
        "{0} объясняет, как {1} за несколько шагов.",
        ["Ассистент", "Учитель", "Модель", "Ответ"],
        ["отсортировать список", "написать стихотворение", "исправить ошибку", "сварить рис"],
    ),
    "uk": (
        "{0} пояснює, як {1} швидко.",
        ["Асистент", "Вчитель", "Модель", "Відповідь"],
        ["відсортувати список", "написати вірш", "виправити помилку", "зварити рис"],
    ),
    "zh": (
        "{0}解释了如何{1}，步骤很清楚。",
        ["助手", "老师", "模型", "回答"],
        ["排序列表", "写一首诗", "修复错误", "煮米饭", "学习编程"],
    ),
    "ja": (
        "{0}は{1}方法を説明します。",
        ["アシスタント", "先生", "モデル", "回答"],
        ["リストを並べ替える", "詩を書く", "バグを直す", "ご飯を炊く"],
    ),
    "ko": (
        "{0}는 {1} 방법을 설명합니다.",
        ["어시스턴트", "선생님", "모델", "답변"],
        ["목록을 정렬하는", "시를 쓰는", "버그를 고치는", "밥을 짓는"],
    ),
}
_EXTRA = [
    "def add(a, b):\n    return a + b",
    "Which response is better? Answer: A",
    "Which response is better? Answer: B",
    "<query>\nHello\n</query>\n---\n<response_a>\nHi\n</response_a>",
    "Emoji are fine too 🙂🚀 and so is math: x² + y² = z².",
]


def tiny_corpus() -> list[str]:
    """A few hundred deterministic sentences in Latin, Cyrillic and CJK scripts, plus code and emoji."""
    sentences = [
        frame.format(subject, action)
        for frame, subjects, actions in _FRAMES.values()
        for subject in subjects
        for action in actions
    ]
    # Two-sentence paragraphs (within and across scripts) teach merges across sentence boundaries.
    paragraphs = [f"{first} {second}" for first, second in zip(sentences, sentences[7:], strict=False)]
    return sentences + paragraphs + _EXTRA


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    """Every test starts from the same Python and torch random state."""
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded tiny Qwen2 model and tokenizer, saved once per session like a Hub checkpoint."""
    return build_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny", corpus=tiny_corpus(), seed=0)


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory holding the embedded default (sample raw files and tiny backbone), built once.

    The embedded tests read this same build (embedded/conftest.py), with the same explicit settings.
    """
    from arena_assets.embedded import build_embedded_default
    from arena_assets_tests.embedded.conftest import demo_settings

    project = tmp_path_factory.mktemp("demo_project")
    build_embedded_default(demo_settings(project))
    return project


@pytest.fixture(scope="session")
def demo_run(demo_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """The whole graph, every asset and check, materialized once per session with the demo recipe.

    The tests of the trained models (stage 1 learned, stage 2 not worse, merge parity, soft labels) read
    this one run: training the tiny model twice more would cost minutes of the suite.
    """
    from arena_assets_tests.demo_graph import run_demo_graph

    return run_demo_graph(demo_project, tmp_path_factory.mktemp("demo_run") / "artifacts")


@pytest.fixture
def demo_settings(demo_project: Path, tmp_path: Path):
    """Demo-profile Settings on the shared embedded default, with a fresh artifact root per test."""
    from arena_assets.settings import Settings

    return Settings(project_dir=demo_project, artifact_root=tmp_path / "artifacts")
