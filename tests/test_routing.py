"""Router: which actor of a role receives a task, under each routing policy."""

from __future__ import annotations

import pytest

from matrix_core.engine.routing import Router

PEERS = ["p0", "p1", "p2"]


def test_least_loaded_picks_the_lowest_reported_load_and_counts_each_send():
    router = Router(PEERS, "least_loaded")
    for index, load in enumerate([4, 1, 2]):
        router.report(index, load)
    picks = [router.pick(f"t{i}") for i in range(3)]
    assert picks == [1, 1, 2], "p1 (load 1), then p1 again (2, ties go to the first), then p2 (2 < 3)"
    assert router.loads == [4, 3, 3]


def test_least_loaded_spreads_sends_when_nothing_is_reported():
    router = Router(PEERS, "least_loaded")
    assert [router.pick(f"t{i}") for i in range(6)] == [0, 1, 2, 0, 1, 2]


def test_a_report_replaces_what_was_counted_for_that_peer():
    router = Router(PEERS, "least_loaded")
    for i in range(3):
        router.pick(f"t{i}")
    router.report(2, 0)
    assert router.loads == [1, 1, 0]
    assert router.pick("next") == 2


def test_round_robin_cycles_through_the_peers_whatever_their_load():
    router = Router(PEERS, "round_robin")
    router.report(0, 100)
    assert [router.pick(f"t{i}") for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_sticky_sends_the_same_id_to_the_same_peer_every_time():
    router = Router(PEERS, "sticky")
    ids = [f"task-{i}" for i in range(30)]
    first = [router.pick(task_id) for task_id in ids]
    again = [router.pick(task_id) for task_id in reversed(ids)][::-1]
    assert first == again
    assert len(set(first)) == 3, "different ids spread over every peer"


def test_sticky_is_stable_across_routers_so_every_actor_agrees():
    ids = [f"task-{i}" for i in range(30)]
    one, other = Router(PEERS, "sticky"), Router(list(PEERS), "sticky")
    for task_id in ids:  # loads differ between the two: sticky must not depend on them
        other.report(0, 50)
        assert one.pick(task_id) == other.pick(task_id)


def test_report_after_replace_ignores_an_index_beyond_the_new_peers():
    router = Router(PEERS, "least_loaded")
    router.replace(["p0"])
    router.report(2, 9)
    assert router.peers == ["p0"]
    assert router.loads == [0]


def test_replace_forgets_the_old_loads():
    router = Router(PEERS, "least_loaded")
    router.report(0, 7)
    router.replace(["q0", "q1"])
    assert router.loads == [0, 0]
    assert router.pick("t") == 0


@pytest.mark.parametrize("policy", ["least_loaded", "round_robin", "sticky"])
def test_pick_with_no_peer_left_raises_lookup_error(policy):
    router = Router(PEERS, policy)
    router.replace([])
    with pytest.raises(LookupError, match="no live actor"):
        router.pick("t0")


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError):
        Router(PEERS, "random")
