"""Rebuilding components inside Ray workers from importable names plus plain config."""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import OmegaConf


def import_target(target: str) -> Any:
    """The object named ``module:qualname``."""
    module, _, qualname = target.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def build_config(schema: type | None, values: dict[str, Any] | None) -> Any:
    """``values`` typed by the dataclass ``schema`` (read-only attribute access when there is no schema)."""
    if schema is None:
        return None if values is None else OmegaConf.create(values, flags={"readonly": True})
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values or {}))
