"""Building a component's typed config in a test, as the engine does inside its actors."""

from __future__ import annotations

from typing import Any

from matrix_core.engine.components import build_config


def typed_config(schema: type, values: dict[str, Any]) -> Any:
    """``values`` (plain YAML-like data, enums as their names) as an instance of the config dataclass ``schema``,
    checked by omegaconf as a run's config is: e.g. ``MyBackend(typed_config(MyConfig, {"base_url": ...}))``."""
    return build_config(schema, values)
