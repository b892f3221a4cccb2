"""Peers without Ray: where a task is sent, how sends to one actor are coalesced, what is held in transit, and how a
send to a dead actor is re-routed."""

from __future__ import annotations

from dataclasses import dataclass

from engine_doubles import LocalHandle, RecordingPeer, run_async, settle, wait_until
from toy_workflow import ToyOrchestrator

from matrix_core.engine.peers import Peers


def toy(task_id: str, trail: str = "", partition: int = 0, status: str | None = None) -> ToyOrchestrator:
    """A toy task whose next role is the one after ``trail`` (a, b, c, a, ...), or the collector once it has a
    ``status``."""
    return ToyOrchestrator(id=task_id, row={}, trail=list(trail), partition=partition, status=status)


@dataclass
class RaisingNextRole(ToyOrchestrator):
    def next_role(self) -> str | None:
        raise RuntimeError("no idea where to go")


@dataclass
class UndeclaredNextRole(ToyOrchestrator):
    def next_role(self) -> str | None:
        return "z"


def handles(*targets: object) -> list[LocalHandle]:
    return [LocalHandle(target) for target in targets]


def test_a_task_goes_to_an_actor_of_its_next_role():
    async def scenario():
        a, b = RecordingPeer(), RecordingPeer()
        collector = RecordingPeer()
        peers = Peers({"a": handles(a), "b": handles(b)}, {}, handles(collector), window_s=0)
        peers.send(toy("t1", trail="a"))
        await wait_until(lambda: b.received, what="b to receive t1")
        await settle()
        return a.received, b.received, collector.received

    assert run_async(scenario()) == ([], ["t1"], [])


def test_a_finished_task_goes_to_its_partitions_collector():
    async def scenario():
        agent, collector0, collector1 = RecordingPeer(), RecordingPeer(), RecordingPeer()
        peers = Peers({"a": handles(agent)}, {}, handles(collector0, collector1), window_s=0)
        peers.send(toy("t1", trail="ab", partition=1, status="success"))
        await wait_until(lambda: collector1.received, what="collector 1 to receive t1")
        await settle()
        return agent.received, collector0.received, collector1.received

    assert run_async(scenario()) == ([], [], ["t1"])


def test_tasks_queued_in_one_loop_turn_for_one_actor_go_in_one_call():
    async def scenario():
        agent = RecordingPeer()
        handle = LocalHandle(agent)
        peers = Peers({"a": [handle]}, {}, handles(RecordingPeer()), window_s=0)
        for i in range(3):
            peers.send(toy(f"t{i}"))
        await wait_until(lambda: agent.batches, what="a delivery")
        await settle()
        return agent.batches, len(handle.calls)

    assert run_async(scenario()) == ([["t0", "t1", "t2"]], 1)


def test_without_coalescing_each_task_is_its_own_call():
    async def scenario():
        agent = RecordingPeer()
        handle = LocalHandle(agent)
        peers = Peers({"a": [handle]}, {}, handles(RecordingPeer()), window_s=0, coalesce=False)
        for i in range(3):
            peers.send(toy(f"t{i}"))
        await wait_until(lambda: len(agent.batches) == 3, what="three deliveries")
        await settle()
        return agent.batches, len(handle.calls)

    assert run_async(scenario()) == ([["t0"], ["t1"], ["t2"]], 3)


def test_sends_to_different_actors_are_separate_calls():
    async def scenario():
        one, two = RecordingPeer(), RecordingPeer()
        peers = Peers({"a": handles(one, two)}, {"a": "round_robin"}, handles(RecordingPeer()), window_s=0)
        for i in range(4):
            peers.send(toy(f"t{i}"))
        await wait_until(lambda: one.batches and two.batches, what="both actors to receive")
        return one.batches, two.batches

    assert run_async(scenario()) == ([["t0", "t2"]], [["t1", "t3"]])


def test_a_task_is_held_until_its_receiver_accepts_it():
    async def scenario():
        agent = RecordingPeer(blocked=True)
        peers = Peers({"a": handles(agent)}, {}, handles(RecordingPeer()), window_s=0)
        peers.send(toy("t1"))
        assert peers.holding() == ["t1"], "held from the moment it is queued"
        await wait_until(lambda: agent.batches, what="the delivery to start")
        assert peers.holding() == ["t1"], "held while the receiver has not accepted it"
        agent.unblock()
        await wait_until(lambda: not peers.holding(), what="t1 to be accepted")

    run_async(scenario())


def test_the_load_an_actor_reports_steers_least_loaded_routing():
    async def scenario():
        busy, idle = RecordingPeer(load=10), RecordingPeer(load=0)
        peers = Peers({"a": handles(busy, idle)}, {}, handles(RecordingPeer()), window_s=0)
        peers.send(toy("t0"))  # goes to busy (index 0): nothing reported yet
        await wait_until(lambda: not peers.holding(), what="t0 to be accepted")
        for i in range(1, 4):
            peers.send(toy(f"t{i}"))
        await wait_until(lambda: not peers.holding(), what="t1..t3 to be accepted")
        return busy.received, idle.received, peers.routers["a"].loads

    busy, idle, loads = run_async(scenario())
    assert (busy, idle) == (["t0"], ["t1", "t2", "t3"])
    assert loads == [10, 0]


def test_a_send_to_a_dead_actor_is_rerouted_to_a_live_one_of_its_role():
    async def scenario():
        live = RecordingPeer()
        dead = LocalHandle(RecordingPeer(), name="dead")
        dead.kill()
        live_handle = LocalHandle(live)
        peers = Peers({"a": [dead, live_handle]}, {"a": "round_robin"}, handles(RecordingPeer()), window_s=0)
        peers.send(toy("t1"))  # round robin starts with the dead actor
        await wait_until(lambda: live.received, what="t1 to reach the live actor")
        await wait_until(lambda: not peers.holding(), what="t1 to be accepted")
        return live.received, peers.rerouted, peers.routers["a"].peers == [live_handle], dead.target.received

    live_got, rerouted, only_live_left, dead_got = run_async(scenario())
    assert live_got == ["t1"]
    assert rerouted == 1
    assert only_live_left, "the dead actor is no longer routed to"
    assert dead_got == []


def test_every_task_of_a_batch_to_a_dead_actor_is_rerouted_and_counted():
    async def scenario():
        live = RecordingPeer()
        dead = LocalHandle(RecordingPeer())
        dead.kill()
        peers = Peers({"a": [dead, LocalHandle(live)]}, {"a": "sticky"}, handles(RecordingPeer()), window_s=0)
        for i in range(12):
            peers.send(toy(f"t{i}"))
        await wait_until(lambda: len(live.received) == 12, what="all tasks at the live actor")
        return sorted(live.received), peers.rerouted, dead.calls

    received, rerouted, dead_calls = run_async(scenario())
    assert received == sorted(f"t{i}" for i in range(12))
    assert len(dead_calls) == 1, "the tasks sticky routing gave the dead actor went in one call"
    (_, (dead_batch,)) = dead_calls[0]
    assert 0 < rerouted == len(dead_batch) < 12, "only the dead actor's share is re-routed"


def test_a_next_role_that_raises_ends_the_task_as_error_at_its_collector():
    async def scenario():
        agent, collector = RecordingPeer(), RecordingPeer()
        peers = Peers({"a": handles(agent)}, {}, handles(collector), window_s=0)
        task = RaisingNextRole(id="t1", row={})
        peers.send(task)
        await wait_until(lambda: collector.tasks, what="t1 at the collector")
        return task, collector.tasks[0], agent.received

    sent, received, agent_got = run_async(scenario())
    assert agent_got == []
    assert (received.id, received.status) == ("t1", "error")
    assert "RaisingNextRole.next_role raised RuntimeError: no idea where to go" in received.reason
    assert sent.status == "error", "the task itself is ended, not only the copy sent"


def test_a_next_role_naming_an_undeclared_role_ends_the_task_as_error_at_its_collector():
    async def scenario():
        agent, collector = RecordingPeer(), RecordingPeer()
        peers = Peers({"a": handles(agent)}, {}, handles(collector), window_s=0)
        peers.send(UndeclaredNextRole(id="t1", row={}))
        await wait_until(lambda: collector.tasks, what="t1 at the collector")
        return collector.tasks[0], agent.received

    received, agent_got = run_async(scenario())
    assert agent_got == []
    assert received.status == "error"
    assert received.reason.endswith("UndeclaredNextRole.next_role returned 'z', a role the workflow does not declare")


def test_restart_asks_the_tasks_own_collector_to_start_it_again():
    async def scenario():
        collector0, collector1 = RecordingPeer(), RecordingPeer()
        peers = Peers({"a": handles(RecordingPeer())}, {}, handles(collector0, collector1), window_s=0)
        await peers.restart(toy("t7", trail="ab", partition=1))
        return collector0.restarted, collector1.restarted

    assert run_async(scenario()) == ([], ["t7"])
