"""Running a workflow from Python (a notebook, a script): the same path as ``matrix run``, returning typed metrics.

::

    import matrix_core

    metrics = matrix_core.run("coral", input="questions.jsonl", overrides=["backend.type=openai", ...])
    print(metrics.status, metrics.tokens_per_s)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matrix_core.errors import UsageError

if TYPE_CHECKING:
    from matrix_core.config import ResolvedConfig
    from matrix_core.metrics import RunMetrics
    from matrix_core.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """``matrix run``'s options that set config keys (``-i`` sets ``input.path``, ...); a flag left off sets none."""

    input: str | None = None
    output: str | None = None
    limit: int | None = None
    resume: bool = False
    retry_errors: bool = False
    force: bool = False
    quiet: bool = False
    skip_bad_rows: bool = False
    system_prompt: str | None = None
    """Sets ``<workflow>.system_prompt``, for workflows that take one."""

    def settings(self) -> dict[str, Any]:
        """The dotted keys the options set."""
        values = {
            "input.path": self.input,
            "output.path": self.output,
            "run.limit": self.limit,
            "run.resume": self.resume or None,
            "run.retry_errors": self.retry_errors or None,
            "run.force": self.force or None,
            "run.quiet": self.quiet or None,
            "input.skip_bad_rows": self.skip_bad_rows or None,
        }
        return {key: value for key, value in values.items() if value is not None}


def resolve_run(
    workflow: str,
    *,
    overrides: Sequence[str] = (),
    config_files: Sequence[str] = (),
    options: RunOptions = RunOptions(),
    profile: str | None = None,
) -> tuple[ResolvedConfig, Registry]:
    """The validated configuration of a run of ``workflow`` and the plugins it comes from: the workflow's defaults,
    the ``profile``, each of ``config_files`` in order, then ``options``, then ``overrides`` (``KEY=VALUE``)."""
    from matrix_core import config
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    component = registry.get("orchestrators", workflow)
    flags = options.settings()
    if options.system_prompt is not None:
        if not component.cls.config_key:
            raise UsageError(f"workflow {workflow!r} takes no --system-prompt")
        flags[f"{component.cls.config_key}.system_prompt"] = options.system_prompt
    sources = config.sources_for(config_files, overrides, _nested(flags))
    return config.resolve(component, registry, sources, profile), registry


def resolve_config(
    workflow: str, *, overrides: Sequence[str] = (), config_files: Sequence[str] = (), profile: str | None = None
) -> ResolvedConfig:
    """The validated configuration ``matrix run workflow -c FILE... --profile PROFILE KEY=VALUE...`` would run with
    (what ``--print-config`` prints: ``.config``, ``.origins``, ``.profile_note()``)."""
    return resolve_run(workflow, overrides=overrides, config_files=config_files, profile=profile)[0]


def run(
    workflow: str,
    *,
    overrides: Sequence[str] = (),
    config_files: Sequence[str] = (),
    input: str | None = None,
    output: str | None = None,
    limit: int | None = None,
    resume: bool = False,
    retry_errors: bool = False,
    force: bool = False,
    system_prompt: str | None = None,
    skip_bad_rows: bool = False,
    quiet: bool = False,
    profile: str | None = None,
    cluster: str | None = None,
    address: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> RunMetrics:
    """Run ``workflow`` over its input to the end, as ``matrix run`` does with the same arguments, and return its
    metrics (also written to ``<output stem>.metrics.json``).

    ``overrides`` are ``KEY=VALUE`` strings (``"run.max_concurrency=64"``); ``config_files`` YAML files, in order;
    the keyword arguments are ``matrix run``'s options. Ray: a private local one started and stopped by the run,
    unless this process is connected to one already, or ``cluster`` (a ``matrix cluster`` name) or ``address`` is
    given. A mistake (unknown workflow, bad config, unreachable backend) raises a
    :class:`~matrix_core.MatrixError` whose message is the CLI's one line.
    """
    from matrix_core.cluster.connect import RayTarget

    target = RayTarget.resolve(cluster, address, runtime_env)
    target.apply_env()  # before anything imports Ray (plugins may), which reads its auth settings once
    options = RunOptions(input, output, limit, resume, retry_errors, force, quiet, skip_bad_rows, system_prompt)
    resolved, registry = resolve_run(
        workflow, overrides=overrides, config_files=config_files, options=options, profile=profile
    )
    if note := resolved.profile_note():
        logger.info("%s", note)
    from matrix_core.engine.run import run_workflow

    return run_workflow(resolved, registry, target)


def _nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested
