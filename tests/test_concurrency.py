"""A server's limit shared by agent actors, without Ray: the controller's shares, the actors' slots, which servers
get a limit."""

from __future__ import annotations

import asyncio

import pytest

from matrix_core.config import RunConfig
from matrix_core.engine.concurrency import ConcurrencyController, Slots, concurrency_of, server_of


def fixed(limit: int) -> ConcurrencyController:
    return ConcurrencyController("http://gpu/v1 (m)", limit, RunConfig())


def shares(controller: ConcurrencyController, demands: dict[str, int]) -> dict[str, int]:
    """Each actor's share once every one has reported ``demands`` (a share is computed when its actor reports)."""
    for name, demand in demands.items():
        controller.report(name, [], 0, demand, 0)
    return {name: controller.report(name, [], 0, demand, 0) for name, demand in demands.items()}


def test_shares_add_up_to_the_limit_and_follow_demand():
    controller = fixed(10)
    assert shares(controller, {"a": 0}) == {"a": 10}, "alone, an actor may use the whole limit"
    assert shares(controller, {"a": 1, "b": 6}) == {"a": 1 + 2, "b": 6 + 1}, "the spare is split, the sum kept"
    assert shares(controller, {"a": 30, "b": 10}) == {"a": 7, "b": 2}, "past the limit, by demand (rounded down)"


def test_every_actor_keeps_one_slot_even_past_the_limit():
    controller = fixed(2)
    shares = [controller.report(name, [], 0, demand=5, in_use=0) for name in "abcd"]
    assert shares[-1] == 1 and min(shares) >= 1


def test_auto_starts_at_the_limiters_first_limit_within_the_ceiling():
    controller = ConcurrencyController("s", "auto", RunConfig(max_concurrency="auto", concurrency_ceiling=8))
    assert controller.limit == 8
    assert controller.state() == (8, None)
    for _ in range(40):
        controller.report("a", [(0.01, 8, 20)] * 4, overloads=1, demand=8, in_use=8)
    assert controller.limit < 8, "overloads bring the limit down"
    card = controller.report_card()
    assert (card.server, card.mode, card.limit) == ("s", "auto", controller.limit)
    assert card.history[0][1] == 8 and card.history[-1][1] == controller.limit


def test_slots_hold_requests_back_until_the_limit_lets_them_in():
    async def scenario() -> list[int]:
        slots, seen = Slots(1), []
        release = asyncio.Event()

        async def request() -> None:
            async with slots.taken():
                seen.append(slots.in_use)
                await release.wait()

        tasks = [asyncio.ensure_future(request()) for _ in range(3)]
        await asyncio.sleep(0)
        assert (slots.in_use, slots.waiting) == (1, 2)
        await slots.set_limit(3)
        await asyncio.sleep(0)
        assert (slots.in_use, slots.waiting) == (3, 0), "a higher limit lets the waiting in at once"
        await slots.set_limit(1)
        release.set()
        await asyncio.gather(*tasks)
        return seen

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [1, 2, 3]


@pytest.mark.parametrize(
    ("run", "backends", "expected"),
    [
        ({}, [{}], None),
        ({"max_concurrency": "auto"}, [{}], "auto"),
        ({}, [{"max_concurrency": 8}, {"max_concurrency": 4}], 4),
        ({}, [{"max_concurrency": 8}, {"max_concurrency": "auto"}], "auto"),
        ({"max_concurrency": "auto"}, [{"max_concurrency": 16}], 16),
    ],
)
def test_which_servers_get_a_limit(run, backends, expected):
    assert concurrency_of(backends, RunConfig(**run)) == expected


def test_roles_on_the_same_server_and_model_share_it():
    one = {"type": "openai", "base_url": "http://gpu/v1", "model": "m"}
    assert server_of(one) == server_of({**one, "api_key_env": "K"}) == "http://gpu/v1 (m)"
    assert server_of({**one, "model": "other"}) != server_of(one)
    assert server_of({"type": "local"}) == "local"
