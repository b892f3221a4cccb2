"""Calls into a workflow's code outside ``step()``: a hook that raises ends the task it was called for, never the
run (architecture 4.5). One place so that every call site contains a fault the same way."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from matrix_core.errors import BadRowError
from matrix_core.orchestrator import Orchestrator

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PluginFault(Exception):
    """A workflow hook raised; ``reason`` names the workflow class, the hook and the exception."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hook_name(owner: Any, hook: str) -> str:
    """``coral.CoralOrchestrator.to_record``: the plugin's package (without ``matrix_``), the class and the hook."""
    cls = owner if isinstance(owner, type) else type(owner)
    package = cls.__module__.partition(".")[0].removeprefix("matrix_")
    return f"{package}.{cls.__qualname__}.{hook}"


def guarded(owner: Any, hook: str, *args: Any, log: bool = True) -> Any:
    """``owner.<hook>(*args)``, any exception raised as a :class:`PluginFault` (and logged, with its traceback,
    unless ``log`` is false: the caller says it); a :class:`BadRowError` (the row's own fault, reported as bad input)
    passes unchanged."""
    try:
        return getattr(owner, hook)(*args)
    except BadRowError:
        raise
    except Exception as error:  # plugin code: its bug is the task's outcome, logged with its traceback
        reason = f"engine: {hook_name(owner, hook)} raised {type(error).__name__}: {error}"
        if log:
            where = f"task {owner.id}: " if isinstance(owner, Orchestrator) else ""
            logger.warning("%s%s", where, reason, exc_info=True)
        raise PluginFault(reason) from error


def contained(task: Orchestrator, hook: str, default: T, *args: Any) -> T:
    """``task.<hook>(*args)``; if it raises, the task ends ``error`` with a reason naming the hook, and ``default``
    is returned instead."""
    try:
        return guarded(task, hook, *args)
    except PluginFault as fault:
        fail(task, fault.reason)
        return default


def fail(task: Orchestrator, reason: str) -> None:
    """End ``task`` as ``error`` without calling its (plugin-overridable) ``finish``."""
    task.status, task.reason = "error", reason
