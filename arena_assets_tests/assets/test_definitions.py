"""The one Definitions: it loads, and its assets, groups, lineage, pools and checks are as written here.

A change to the graph must change these snapshots too, so it shows in review.
"""

from __future__ import annotations

import dagster as dg
import pytest

from arena_assets.definitions import defs

# asset -> (group, parents)
GRAPH: dict[str, tuple[str, set[str]]] = {
    "wsdm_train_files": ("raw_files", set()),
    "wsdm_test_files": ("raw_files", set()),
    "lmsys_55k_files": ("raw_files", set()),
    "lmsys_33k_files": ("raw_files", set()),
    "open_model_pairs_files": ("raw_files", set()),
    "wsdm_train": ("data", {"wsdm_train_files"}),
    "wsdm_test": ("data", {"wsdm_test_files"}),
    "lmsys_55k": ("data", {"lmsys_55k_files"}),
    "lmsys_33k": ("data", {"lmsys_33k_files"}),
    "open_model_pairs": ("data", {"open_model_pairs_files"}),
    "hard_label_set": ("data", {"wsdm_train", "lmsys_55k", "lmsys_33k"}),
    "stage1_adapter": ("stage1", {"hard_label_set"}),
    "merged_stage1_model": ("stage1", {"stage1_adapter"}),
    "open_model_soft_logits": ("stage1", {"merged_stage1_model", "open_model_pairs"}),
    "stage2_dataset": ("stage2", {"hard_label_set", "open_model_soft_logits", "open_model_pairs"}),
    "stage2_adapter": ("stage2", {"stage2_dataset"}),
    "final_model": ("stage2", {"stage2_adapter"}),
    "evaluation": ("evaluation", {"final_model", "hard_label_set"}),
    "submission": ("evaluation", {"final_model", "wsdm_test"}),
}
OBSERVED = {
    "wsdm_train_files",
    "wsdm_test_files",
    "lmsys_55k_files",
    "lmsys_33k_files",
    "open_model_pairs_files",
}
GPU_ASSETS = {
    "stage1_adapter",
    "merged_stage1_model",
    "open_model_soft_logits",
    "stage2_adapter",
    "final_model",
    "evaluation",
    "submission",
}
# (asset, check) -> blocking
CHECKS: dict[tuple[str, str], bool] = {
    ("hard_label_set", "hard_label_schema"): True,
    ("hard_label_set", "label_balance_within_bounds"): False,
    ("hard_label_set", "no_prompt_in_both_splits"): True,
    ("hard_label_set", "swap_pairs_complete"): True,
    ("open_model_soft_logits", "soft_logits_cover_open_pairs"): True,
    ("stage2_dataset", "soft_label_rows_finite"): True,
    ("merged_stage1_model", "merged_model_matches_adapter"): True,
    ("stage2_adapter", "stage2_not_worse_than_stage1"): True,
    ("final_model", "merged_model_matches_adapter"): True,
}


@pytest.fixture(scope="module")
def graph() -> dg.AssetGraph:
    """The resolved asset graph of the one Definitions."""
    return defs.resolve_asset_graph()


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_implicit_global_asset_job_def() is not None
    assert {job.name for job in defs.jobs or []} == {"full_pipeline"}
    assert set(defs.resources or {}) == {"settings", "launcher"}


def test_asset_keys_groups_and_lineage(graph: dg.AssetGraph) -> None:
    observed = {
        key.to_user_string(): (
            graph.get(key).group_name,
            {p.to_user_string() for p in graph.get(key).parent_keys},
        )
        for key in graph.get_all_asset_keys()
    }
    assert observed == GRAPH


def test_raw_files_are_observed_and_the_rest_materialized(graph: dg.AssetGraph) -> None:
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        observable = key.to_user_string() in OBSERVED
        assert (node.is_observable, node.is_materializable) == (observable, not observable), key


def test_gpu_assets_share_the_gpu_pool(graph: dg.AssetGraph) -> None:
    pools = {key.to_user_string(): graph.get(key).pools for key in graph.get_all_asset_keys()}
    assert {name for name, p in pools.items() if p} == GPU_ASSETS
    assert all(pools[name] == {"gpu"} for name in GPU_ASSETS)


def test_every_asset_has_a_description_and_kinds() -> None:
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert set(specs) == set(GRAPH)
    for name, spec in specs.items():
        assert spec.description and len(spec.description.strip()) > 20, name
        assert spec.kinds, name


def test_derived_assets_rebuild_when_stale(graph: dg.AssetGraph) -> None:
    for key in graph.get_all_asset_keys():
        condition = graph.get(key).automation_condition
        assert (condition is None) == (key.to_user_string() in OBSERVED), key


def test_checks_and_which_block(graph: dg.AssetGraph) -> None:
    observed = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
    }
    assert observed == CHECKS
