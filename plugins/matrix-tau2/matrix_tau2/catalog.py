"""tau2's domains and tasks, loaded on first use and cached per process.

Importing tau2 pulls in litellm (about 3 s), so nothing here is imported until a task needs it: ``matrix --help``
and ``matrix plugins list`` stay fast.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix_core import BadRowError, ConfigError

if TYPE_CHECKING:
    from tau2.data_model.tasks import Task
    from tau2.environment.environment import Environment


@functools.cache
def registry() -> Any:
    """tau2's registry of domains and task sets (the first call imports tau2)."""
    # litellm fetches its model price list from the network at import unless told to use its bundled copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from loguru import logger

    logger.disable("tau2")  # tau2 logs every tool call and registration to stderr through loguru
    from tau2.registry import registry as tau2_registry

    return tau2_registry


@functools.cache
def domains() -> list[str]:
    """The domains tau2 knows (environments with a task set of the same name)."""
    tau2 = registry()
    return [name for name in tau2.get_domains() if name in tau2.get_task_sets()]


def check_domain(domain: str) -> None:
    """Raise a one-line error naming the known domains when ``domain`` is not one."""
    if domain not in domains():
        raise BadRowError(f"unknown tau2 domain {domain!r} (one of: {', '.join(domains())})")


@functools.cache
def _splits(domain: str) -> dict[str, list[str]]:
    loader = registry().get_task_splits_loader(domain)
    return loader() if loader is not None else {}


@functools.cache
def _tasks(domain: str, split: str | None) -> dict[str, Task]:
    return {task.id: task for task in registry().get_tasks_loader(domain)(split)}


def task(domain: str, task_id: str) -> Task:
    """The task ``task_id`` of ``domain``, looked up in the domain's default task set, then in its splits."""
    check_domain(domain)
    for split in (None, *_splits(domain)):
        found = _tasks(domain, split).get(task_id)
        if found is not None:
            return found
    raise BadRowError(f"unknown task id {task_id!r} in tau2 domain {domain!r}")


def split_ids(domain: str, split: str) -> list[str]:
    """The ids of the tasks in ``split`` of ``domain``, in tau2's order."""
    try:
        check_domain(domain)
    except BadRowError as error:
        raise ConfigError(f"tau2.domain: {error}") from None
    splits = _splits(domain)
    if split not in splits:
        known = ", ".join(splits) or "none"
        raise ConfigError(f"tau2.task_split: domain {domain!r} has no split {split!r} (its splits: {known})")
    return list(_tasks(domain, split))


def default_rows(domain: str, split: str, num_trials: int) -> str:
    """A jsonl file naming every task of ``split``, ``num_trials`` times each (task by task, so that ``--limit``
    keeps all trials of the tasks it takes); its path. This is the input of ``matrix run tau2`` without ``-i``."""
    if num_trials < 1:
        raise ConfigError(f"tau2.num_trials: must be at least 1, got {num_trials}")
    rows = [
        {"id": f"{domain}/{task_id}/{trial}", "domain": domain, "task_id": task_id, "trial": trial}
        for task_id in split_ids(domain, split)
        for trial in range(num_trials)
    ]
    folder = Path(tempfile.gettempdir()) / "matrix-tau2"
    folder.mkdir(exist_ok=True)
    path = folder / f"{domain}-{split}-{num_trials}.jsonl"
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if not path.exists() or path.read_text() != text:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)  # atomic: concurrent runs never read a half-written list
    return str(path)


@dataclass(frozen=True)
class DomainInfo:
    """What the prompts need from a domain: the policy and the tools of each side, as OpenAI tool schemas."""

    policy: str
    tools: list[dict[str, Any]]
    user_tools: list[dict[str, Any]]
    environment_info: dict[str, Any]


@functools.cache
def domain_info(domain: str) -> DomainInfo:
    """The policy and tool schemas of ``domain`` (one environment built once per process to read them)."""
    environment = new_environment(domain)
    user_tools = environment.get_user_tools() if environment.user_tools is not None else []
    return DomainInfo(
        policy=environment.get_policy(),
        tools=[tool.openai_schema for tool in environment.get_tools()],
        user_tools=[tool.openai_schema for tool in user_tools],
        environment_info=environment.get_info(include_tool_info=False).model_dump(mode="json"),
    )


def new_environment(domain: str) -> Environment:
    """A fresh environment of ``domain``, its database parsed from tau2's data files."""
    return registry().get_env_constructor(domain)()
