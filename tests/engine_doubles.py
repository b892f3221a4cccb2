"""In-process stand-ins for the Ray side of the engine, so that its plain classes (Peers, Collector, Writer) can be
tested without starting Ray.

:class:`LocalHandle` plays an actor handle: ``handle.method.remote(*args)`` runs ``obj.method(*args)`` on the
running event loop and returns an awaitable of its result, much as Ray does: the call starts on a later loop turn
(never inside the caller), calls run in the order they were made, arguments and results are copies (a handle inside
them stays the same handle), and a killed handle's calls raise :class:`ray.exceptions.RayActorError`.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from ray.exceptions import RayActorError

from matrix_core.orchestrator import Orchestrator


class LocalHandle:
    """An in-process actor handle for ``target``; ``calls`` lists ``(method, args)`` in the order they were made."""

    def __init__(self, target: Any, name: str = "") -> None:
        self.target = target
        self.name = name or type(target).__name__
        self.dead = False
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def kill(self) -> None:
        """From now on every call raises ``RayActorError``, as for an actor that died."""
        self.dead = True

    def __getattr__(self, name: str) -> _RemoteMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        getattr(self.target, name)  # an unknown method fails at the call site, as with Ray
        return _RemoteMethod(self, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> LocalHandle:
        return self  # a handle passed to an actor refers to the same actor

    def __repr__(self) -> str:
        return f"LocalHandle({self.name}{', dead' if self.dead else ''})"


class _RemoteMethod:
    def __init__(self, handle: LocalHandle, name: str) -> None:
        self.handle = handle
        self.name = name

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        self.handle.calls.append((self.name, args))
        return asyncio.ensure_future(self._call(copy.deepcopy(args)))

    async def _call(self, args: tuple[Any, ...]) -> Any:
        if self.handle.dead:
            raise RayActorError()
        result = getattr(self.handle.target, self.name)(*args)
        if inspect.isawaitable(result):
            result = await result
        return copy.deepcopy(result)


class RecordingPeer:
    """An agent actor or collector that records what it is given: ``batches`` holds the ids of each ``deliver`` call.
    With ``blocked``, ``deliver`` waits until :meth:`unblock` (the receiver has not accepted the batch yet)."""

    def __init__(self, load: int = 0, blocked: bool = False) -> None:
        self.load = load
        self.batches: list[list[str]] = []
        self.tasks: list[Orchestrator] = []
        self.restarted: list[str] = []
        self._open = asyncio.Event()
        if not blocked:
            self._open.set()

    async def deliver(self, tasks: list[Orchestrator]) -> int:
        self.batches.append([task.id for task in tasks])
        self.tasks += tasks
        await self._open.wait()
        return self.load

    async def restart(self, task_id: str) -> None:
        self.restarted.append(task_id)

    def unblock(self) -> None:
        """Accept the batches waiting in ``deliver``."""
        self._open.set()

    @property
    def received(self) -> list[str]:
        """Every id delivered, in order."""
        return [task_id for batch in self.batches for task_id in batch]


class FinishingAgent:
    """An agent actor that ends every task it is given as ``success`` and hands it to its partition's collector
    (``collectors``, set once they exist). With ``hold``, it keeps the tasks until :meth:`release`; otherwise it
    keeps each batch for ``turns`` event-loop turns. ``most_held`` is the most tasks it held at once."""

    def __init__(self, hold: bool = False, turns: int = 0) -> None:
        self.hold = hold
        self.turns = turns
        self.collectors: list[LocalHandle] = []
        self.received: list[str] = []
        self.held: list[Orchestrator] = []
        self.most_held = 0
        self._finishing: set[asyncio.Task[None]] = set()

    async def deliver(self, tasks: list[Orchestrator]) -> int:
        self.received += [task.id for task in tasks]
        self.held += tasks
        self.most_held = max(self.most_held, len(self.held))
        if not self.hold:
            finishing = asyncio.ensure_future(self._finish_later(tasks))
            self._finishing.add(finishing)
            finishing.add_done_callback(self._finishing.discard)
        return len(self.held)

    async def release(self) -> None:
        """Finish and hand back every task held."""
        await self._finish(list(self.held))

    def holding(self) -> set[str]:
        """Ids of the tasks held now."""
        return {task.id for task in self.held}

    async def _finish_later(self, tasks: list[Orchestrator]) -> None:
        for _ in range(self.turns):
            await asyncio.sleep(0)
        await self._finish(tasks)

    async def _finish(self, tasks: list[Orchestrator]) -> None:
        finished = {id(task) for task in tasks}
        self.held = [task for task in self.held if id(task) not in finished]  # by identity: copies compare equal
        for task in tasks:
            task.finish("success")
        for task in tasks:
            await self.collectors[task.partition].deliver.remote([task])


class FakeWriter:
    """The writer's side of a collector: keeps what it is given; ``records`` maps each id to its record."""

    def __init__(self) -> None:
        self.written: list[tuple[dict[str, Any] | None, Any]] = []
        self.rejected: list[dict[str, Any]] = []

    def write(self, batch: list[tuple[dict[str, Any] | None, Any]]) -> None:
        self.written += batch

    def reject(self, entry: dict[str, Any]) -> None:
        self.rejected.append(entry)

    @property
    def records(self) -> dict[str, dict[str, Any] | None]:
        return {summary.id: record for record, summary in self.written}


async def wait_until(condition: Callable[[], object], timeout_s: float = 5.0, what: str = "the condition") -> None:
    """Let the event loop run until ``condition()`` is true; fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(turns: int = 100) -> None:
    """Run ``turns`` event-loop turns: enough for in-process calls (no I/O, no timers) to do all they can, so that a
    test can check that something did *not* happen."""
    for _ in range(turns):
        await asyncio.sleep(0)


def run_async(scenario: Coroutine[Any, Any, Any], timeout_s: float = 10.0) -> Any:
    """Run ``scenario`` on a fresh event loop; a scenario that hangs fails after ``timeout_s``."""
    return asyncio.run(asyncio.wait_for(scenario, timeout_s))
