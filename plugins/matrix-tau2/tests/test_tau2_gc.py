"""The assumption behind :mod:`matrix_tau2.gc_tuning`: an environment, used and dropped, is freed by reference
counting alone (no cycles), so collecting less often holds no dropped environment longer."""

from __future__ import annotations

import gc
import weakref

import pytest
from matrix_tau2 import catalog, environments, gc_tuning
from tau2.data_model.message import ToolCall


@pytest.mark.parametrize("domain", ["airline", "retail", "telecom", "mock"])
def test_a_used_environment_is_freed_without_the_collector(domain):
    task = next(t for t in catalog._tasks(domain, None).values() if t.evaluation_criteria.actions)
    environment = environments.build(domain, task.id, [])
    action = task.evaluation_criteria.actions[0]
    call = ToolCall(id="c0", name=action.name, arguments=action.arguments, requestor=action.requestor)
    assert not environment.get_response(call).error
    freed = [weakref.ref(environment)]
    freed += [weakref.ref(tools.db) for tools in (environment.tools, environment.user_tools) if tools is not None]
    gc.disable()
    try:
        del environment
        assert [ref() for ref in freed] == [None] * len(freed)
    finally:
        gc.enable()


def test_tuning_keeps_the_collector_on_with_higher_thresholds():
    before = gc.get_threshold()
    try:
        gc_tuning.tune()
        assert gc.isenabled()
        assert gc.get_threshold() == gc_tuning.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
