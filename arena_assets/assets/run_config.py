"""Launchpad/CLI run config built from the ranker's config dataclasses, so each default is defined once.

Every field is optional: left unset (None) it takes the profile's value or, failing that, the ranker
default from arena_assets/ranker/config.py, which the field's description quotes.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, get_args, get_origin

import dagster as dg
from pydantic import Field, create_model

from arena_assets.ranker.config import config_from_dict, config_to_dict, field_defaults, field_types


def _schema_type(annotation: Any) -> Any:
    """Tuples become lists: Dagster's config schema has no tuple type."""
    origin = get_origin(annotation)
    if origin is tuple:
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return list[args[0]]
    if origin is Literal:  # Dagster config has no Literal; the choices are checked in build_ranker_config
        return type(get_args(annotation)[0])
    return annotation


def _describe(annotation: Any, default: Any) -> str:
    choices = f"one of {list(get_args(annotation))}; " if get_origin(annotation) is Literal else ""
    return f"{choices}unset: the profile's value or the ranker default {default!r}"


def run_config_class(name: str, ranker_config: type, *, exclude: set[str]) -> type[dg.Config]:
    """A `dg.Config` subclass with every ranker field (minus `exclude`) as an optional override."""
    defaults = field_defaults(ranker_config)
    fields: dict[str, Any] = {}
    for field_name, annotation in field_types(ranker_config).items():
        if field_name in exclude:
            continue
        fields[field_name] = (
            typing.Optional[_schema_type(annotation)],  # noqa: UP045 - pydantic needs the runtime form
            Field(default=None, description=_describe(annotation, defaults[field_name])),
        )
    return create_model(name, __base__=dg.Config, **fields)


def build_ranker_config(
    ranker_config: type, *layers: dict[str, Any], run_config: dg.Config | None = None
) -> Any:
    """Ranker defaults, then each layer (profile, paths), then the non-None run-config fields on top."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(ranker_config)}
    for layer in layers:
        values.update({k: v for k, v in layer.items() if k in names})
    if run_config is not None:
        values.update({k: v for k, v in run_config.model_dump().items() if v is not None})
    for name, annotation in field_types(ranker_config).items():
        if get_origin(annotation) is Literal and name in values and values[name] not in get_args(annotation):
            raise dg.Failure(
                f"run config field {name!r} is {values[name]!r}; choose one of {list(get_args(annotation))}"
            )
    return config_from_dict(ranker_config, values)


__all__ = ["build_ranker_config", "config_to_dict", "run_config_class"]
