"""The assumption behind the engine's garbage-collector setting (``run.gc_threshold``) for tau2: an environment,
used and dropped, is freed by reference counting alone (no cycles), so collecting less often holds no dropped
environment longer."""

from __future__ import annotations

import gc
import weakref

import pytest
from matrix_tau2 import catalog, environments
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
