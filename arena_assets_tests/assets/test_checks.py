"""Each asset check passes on a good artifact and fails, with the observed values, on one broken on purpose.

The hard-label set is the real one (raw datasets and hard_label_set materialized on the embedded default);
the GPU outputs are small files in the layout the checks read. A check that reads an artifact runs as
Dagster runs it: a check-only run of the graph, which never rebuilds the asset. A check its asset computes
while it materializes (merge parity in the merger, finite teacher logits in the stage-2 builder) fails in a
real materialization of that asset, on the session's demo run's adapters.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from arena_assets.assets import layout
from arena_assets.assets.layout import hard_label_paths, model_dir, rows_path
from arena_assets.definitions import defs
from arena_assets.ranker.artifacts import LOGIT_COLUMNS
from arena_assets.settings import Settings
from arena_assets_tests.demo_graph import (
    DemoRun,
    demo_resources,
    graph_assets,
    graph_checks,
    materialize_data,
    resolved,
)
from arena_assets_tests.fixtures.preloaded_launcher import PreloadedLauncher


@pytest.fixture(scope="module")
def good_root(demo_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good artifact set: the real hard-label set plus small GPU outputs that pass every check."""
    root = tmp_path_factory.mktemp("good") / "artifacts"
    with dg.instance_for_test() as instance:
        assert materialize_data(demo_project, root, instance, ("hard_label_set", "open_model_pairs")).success
    settings = resolved(demo_project, root)
    ids = pd.read_parquet(rows_path(settings, "open_model_pairs"))["id"].astype(str)
    rng = np.random.default_rng(0)
    logits = pd.DataFrame(rng.normal(size=(len(ids), 4)), columns=list(LOGIT_COLUMNS))
    logits = logits.assign(id=ids.to_numpy())
    _write_parquet(logits, layout.logits_path(settings, "open_model_soft_logits"))
    _write_json(model_dir(settings, "stage1_adapter") / "metrics.json", {"val_accuracy": 0.80})
    _write_json(model_dir(settings, "stage2_adapter") / "metrics.json", {"val_accuracy": 0.79})
    return root


@pytest.fixture
def artifacts(good_root: Path, demo_project: Path, tmp_path: Path) -> tuple[Path, Settings]:
    """A copy of the good artifact set for one test to break, and the settings that point at it."""
    root = tmp_path / "artifacts"
    shutil.copytree(good_root, root)
    return root, resolved(demo_project, root)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _edit_parquet(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame | None]) -> None:
    frame = pd.read_parquet(path)
    edited = edit(frame)
    (frame if edited is None else edited).to_parquet(path, index=False)


def run_check(
    project: Path, root: Path, check: dg.AssetChecksDefinition
) -> tuple[dg.ExecuteInProcessResult, dg.AssetCheckEvaluation]:
    """A check-only run of `check` against the artifacts under `root`; its one evaluation."""
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*graph_assets(), *graph_checks()],
            selection=dg.AssetSelection.checks(check),
            resources=demo_resources(project, root),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.get_asset_materialization_events()
    (evaluation,) = result.get_asset_check_evaluations()
    return result, evaluation


def values(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    return {k: v.value for k, v in evaluation.metadata.items()}


def check(name: str, asset: str | None = None) -> dg.AssetChecksDefinition:
    """The declared check of that name (on `asset`, where two checks share a name)."""
    found = [
        c
        for c in graph_checks()
        for key in c.check_keys
        if key.name == name and (asset is None or key.asset_key.to_user_string() == asset)
    ]
    (only,) = found
    return only


def _name(key: dg.AssetCheckKey) -> tuple[str, str]:
    return key.asset_key.to_user_string(), key.name


ALL_CHECKS = {_name(key) for key in defs.resolve_asset_graph().asset_check_keys}
STANDALONE_CHECKS = {_name(key) for c in graph_checks() for key in c.check_keys}
IN_ASSET_CHECKS = ALL_CHECKS - STANDALONE_CHECKS  # declared in check_specs: computed while materializing


@pytest.mark.slow
def test_good_artifacts_pass_every_check(artifacts, demo_project: Path) -> None:
    root, _ = artifacts
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*graph_assets(), *graph_checks()],
            selection=dg.AssetSelection.checks(*graph_checks()),
            resources=demo_resources(demo_project, root),
            instance=instance,
        )
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): (e.passed, values(e))
        for e in result.get_asset_check_evaluations()
    }
    assert set(evaluations) == STANDALONE_CHECKS
    assert all(passed for passed, _ in evaluations.values()), evaluations
    assert not result.get_asset_materialization_events()


# Each case: the check, how to break its artifact, and the metadata the failure must show.
def _prompt_in_both_splits(s: Settings) -> None:
    train_path, validation_path = hard_label_paths(s)
    shared = pd.read_parquet(validation_path)["prompt"].iloc[0]
    _edit_parquet(train_path, lambda f: f.assign(prompt=[shared, *f["prompt"].iloc[1:]]))


def _swap_row_removed(s: Settings) -> None:
    _edit_parquet(hard_label_paths(s)[0], lambda f: f.drop(index=1))


def _swap_label_not_flipped(s: Settings) -> None:
    def edit(f: pd.DataFrame) -> None:
        f.loc[1, "winner"] = f.loc[0, "winner"]

    _edit_parquet(hard_label_paths(s)[0], edit)


def _winner_null(s: Settings) -> None:
    def edit(f: pd.DataFrame) -> None:
        f.loc[[0, 1], "winner"] = None

    _edit_parquet(hard_label_paths(s)[1], edit)


def _column_missing(s: Settings) -> None:
    _edit_parquet(hard_label_paths(s)[0], lambda f: f.drop(columns=["pair_id"]))


def _all_b_wins(s: Settings) -> None:
    def edit(f: pd.DataFrame) -> None:
        f["winner"] = np.where(f["is_swapped"], "model_a", "model_b")

    _edit_parquet(hard_label_paths(s)[0], edit)


def _nonfinite_soft_logit(s: Settings) -> None:
    def edit(f: pd.DataFrame) -> None:
        f.loc[3, "b_logit_swapped"] = np.nan

    _edit_parquet(layout.logits_path(s, "open_model_soft_logits"), edit)


def _soft_logit_id_missing(s: Settings) -> None:
    _edit_parquet(layout.logits_path(s, "open_model_soft_logits"), lambda f: f.iloc[1:])


def _soft_logit_id_twice(s: Settings) -> None:
    _edit_parquet(layout.logits_path(s, "open_model_soft_logits"), lambda f: pd.concat([f, f.iloc[:1]]))


def _stage2_worse(s: Settings) -> None:
    _write_json(model_dir(s, "stage2_adapter") / "metrics.json", {"val_accuracy": 0.70})


BROKEN = {
    "prompt_in_both_splits": (
        "hard_label_set",
        "no_prompt_in_both_splits",
        _prompt_in_both_splits,
        {"observed_shared_prompts": 1, "expected_shared_prompts": 0},
    ),
    "swap_row_removed": (
        "hard_label_set",
        "swap_pairs_complete",
        _swap_row_removed,
        {"expected": "even count"},
    ),
    "swap_label_not_flipped": (
        "hard_label_set",
        "swap_pairs_complete",
        _swap_label_not_flipped,
        {"observed_broken_pairs": 1, "expected_broken_pairs": 0},
    ),
    "winner_null": (
        "hard_label_set",
        "hard_label_schema",
        _winner_null,
        {"problems": {"validation.parquet": {"missing_columns": [], "rows_without_winner": 2}}},
    ),
    "column_missing": (
        "hard_label_set",
        "hard_label_schema",
        _column_missing,
        {"problems": {"train.parquet": {"missing_columns": ["pair_id"], "rows_without_winner": 0}}},
    ),
    "label_balance": (
        "hard_label_set",
        "label_balance_within_bounds",
        _all_b_wins,
        {"observed_share_b": 1.0, "expected_low": 0.3, "expected_high": 0.7},
    ),
    "soft_logit_nonfinite": (
        "open_model_soft_logits",
        "soft_logits_cover_open_pairs",
        _nonfinite_soft_logit,
        {"observed_nonfinite": 1, "observed_missing_ids": 0, "observed_duplicate_ids": 0},
    ),
    "soft_logit_id_missing": (
        "open_model_soft_logits",
        "soft_logits_cover_open_pairs",
        _soft_logit_id_missing,
        {"observed_nonfinite": 0, "observed_missing_ids": 1, "observed_duplicate_ids": 0},
    ),
    "soft_logit_id_twice": (
        "open_model_soft_logits",
        "soft_logits_cover_open_pairs",
        _soft_logit_id_twice,
        {"observed_missing_ids": 0, "observed_duplicate_ids": 1},
    ),
    "stage2_worse": (
        "stage2_adapter",
        "stage2_not_worse_than_stage1",
        _stage2_worse,
        {"observed_stage2_accuracy": 0.70, "stage1_accuracy": 0.80, "tolerance": 0.02},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_artifact_fails_its_check(artifacts, demo_project: Path, case: str) -> None:
    asset, name, breaks, expected = BROKEN[case]
    root, settings = artifacts
    breaks(settings)
    result, evaluation = run_check(demo_project, root, check(name, asset))
    assert evaluation.passed is False
    observed = values(evaluation)
    for key, value in expected.items():
        assert observed[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    (spec,) = [spec for spec in check(name, asset).check_specs if spec.asset_key.to_user_string() == asset]
    # A failed blocking check fails its step (and so the run); a WARN check reports and lets the run go on.
    assert result.success is not spec.blocking
    if name == "label_balance_within_bounds":
        assert evaluation.severity == dg.AssetCheckSeverity.WARN and not spec.blocking


def _adapter_from(demo_run: DemoRun, adapter: str) -> Callable[[Settings], dict]:
    """Copy the demo run's trained adapter into the broken set; merge with a tolerance no merge meets."""

    def breaks(s: Settings) -> dict:
        shutil.copytree(model_dir(demo_run.settings, adapter), model_dir(s, adapter), dirs_exist_ok=True)
        return {"parity_atol": 1e-12}  # fp32 merges differ by ~1e-7 from the two-path sum

    return breaks


def _nonfinite_teacher(s: Settings) -> dict:
    _nonfinite_soft_logit(s)  # row 3's teacher logits become NaN in the stage-2 set: the row and its swap
    return {}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("asset", "breaks", "expected"),
    [
        ("merged_stage1_model", "stage1_adapter", {"expected_at_most": 1e-12}),
        ("final_model", "stage2_adapter", {"expected_at_most": 1e-12}),
        ("stage2_dataset", None, {"observed_nonfinite_rows": 2, "expected_nonfinite_rows": 0}),
    ],
)
def test_a_check_its_asset_computes_fails_as_a_check(
    artifacts, demo_project: Path, demo_run: DemoRun, asset: str, breaks: str | None, expected: dict
) -> None:
    root, settings = artifacts
    ops_config = _adapter_from(demo_run, breaks)(settings) if breaks else _nonfinite_teacher(settings)
    # The merger in a process forked with the ranker imported: what is under test is the check, and the
    # demo run has launched the same merges through accelerate.
    resources = {**demo_resources(demo_project, root), "launcher": PreloadedLauncher(cpu=True)}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [*graph_assets(), *graph_checks()],
            selection=[asset],
            resources=resources,
            run_config={"ops": {asset: {"config": ops_config}}} if ops_config else None,
            instance=instance,
            raise_on_error=False,
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert (evaluation.asset_key.to_user_string(), evaluation.check_name) in IN_ASSET_CHECKS
    assert evaluation.passed is False and not result.success  # blocking: the run stops here
    observed = values(evaluation)
    for key, value in expected.items():
        assert observed[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    if "expected_at_most" in expected:
        assert observed["observed_max_abs_diff"] > expected["expected_at_most"]
    # The step itself did not crash: its materialization is recorded beside the failed check.
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == [asset]


def test_every_check_has_a_broken_case() -> None:
    broken = {(asset, name) for asset, name, _, _ in BROKEN.values()}
    assert broken == STANDALONE_CHECKS
    assert {("merged_stage1_model", "merged_model_matches_adapter"),
                                    ("final_model", "merged_model_matches_adapter"),
                                    ("stage2_dataset", "soft_label_rows_finite")} == IN_ASSET_CHECKS
