"""The config the launchpad scaffolds for every job survives a round trip through plain YAML.

The UI's "Scaffold all default config" writes each default as a plain scalar; a value such as `no`, `on`,
`off`, `null` or `1e-5` comes back from YAML as a boolean, null or number and fails the job's own config
validation, which disables Materialize. Any field with that trap fails here.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.snap.snap_to_yaml import default_values_from_type_snap

from arena_assets.definitions import defs


def scaffolded_config(job: dg.JobDefinition) -> dict[str, Any]:
    """The default run config the launchpad scaffolds for `job` (GraphQL's `rootDefaultYaml`)."""
    snapshot = job.get_job_snapshot()
    schema = snapshot.config_schema_snapshot
    root = schema.get_config_snap(snapshot.mode_def_snaps[0].root_config_key)
    return default_values_from_type_snap(root, schema)


def plain_yaml(value: Any, indent: int = 0) -> str:
    """`value` as block YAML whose scalars are all written plain (unquoted), as a person would type them."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return "{}\n"
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:\n{plain_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {plain_yaml(item).strip()}\n")
        return "".join(lines)
    if isinstance(value, list):
        return "".join(f"{pad}- {plain_yaml(item, indent + 2).strip()}\n" for item in value) or "[]\n"
    if value is None:
        return "null\n"
    if isinstance(value, bool):
        return f"{str(value).lower()}\n"
    return f"{value}\n"


def launchpad_jobs() -> dict[str, dg.JobDefinition]:
    """Every job a user can open the launchpad on: the named jobs and each asset's own selection."""
    jobs = {job.name: job for job in defs.get_repository_def().get_all_jobs()}
    asset_job = defs.resolve_implicit_global_asset_job_def()
    for key in defs.resolve_asset_graph().materializable_asset_keys:
        jobs[key.to_user_string()] = asset_job.get_subset(asset_selection={key})
    return jobs


def test_plain_yaml_keeps_the_trap_visible() -> None:
    # The reason for this module: a plain `no` is a boolean to a YAML reader.
    assert yaml.safe_load(plain_yaml({"mode": "no", "n": 2, "x": 0.5})) == {"mode": False, "n": 2, "x": 0.5}


@pytest.mark.parametrize("name", sorted(launchpad_jobs()))
def test_scaffolded_default_config_validates_after_a_plain_yaml_round_trip(name: str) -> None:
    job = launchpad_jobs()[name]
    scaffold = scaffolded_config(job)
    reloaded = yaml.safe_load(plain_yaml(scaffold)) or {}
    assert reloaded == scaffold, "a default reads back as another type from plain YAML"
    dg.validate_run_config(job, reloaded)
