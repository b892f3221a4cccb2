"""The adaptive concurrency limiter, driven by a closed-loop model of one continuous-batching LLM server."""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matrix_core.engine.limiter import GradientLimiter, LimiterSettings

TOKENS = 20
"""Output tokens per modelled request: with 0.01 s per token a step takes 0.2 s, a few steps per 1 s window."""


@dataclass
class Server:
    """A continuous-batching server: ``slots`` requests decode at once at ``base`` seconds per token; more wait, so
    the latency per token grows as ``base x in_flight / slots``. Beyond ``refuse_above`` in flight it answers 429
    (``rate_limited``: with a Retry-After, as a rate limit does; else as an overloaded server does)."""

    slots: int
    base: float = 0.01
    refuse_above: int | None = None
    rate_limited: bool = False

    def latency(self, in_flight: int) -> float:
        """Seconds per output token of a request sent while ``in_flight`` requests (itself included) are."""
        return self.base * max(1.0, in_flight / self.slots)


@dataclass
class Client:
    """Keeps the limiter's limit of requests in flight (at most ``demand``, when it has that few to send)."""

    limiter: GradientLimiter
    server: Server
    demand: int | None = None
    now: float = 0.0

    def run(self, windows: int) -> list[int]:
        """Step until ``windows`` more windows closed; the limit after each. A step sends ``limit`` requests at
        once; those the server admits complete together after TOKENS tokens, the others are refused."""
        limits: list[int] = []
        while len(limits) < windows:
            sent = self.limiter.limit if self.demand is None else min(self.limiter.limit, self.demand)
            admitted = min(sent, self.server.refuse_above or sent)
            latency = self.server.latency(admitted)
            self.now += latency * TOKENS
            for _ in range(sent - admitted):
                self.limiter.overloaded(self.now, rate_limited=self.server.rate_limited)
            closed = self.limiter.windows
            for _ in range(admitted):
                self.limiter.record(latency, sent, self.now)
            limits += [self.limiter.limit] * (self.limiter.windows - closed)
        return limits


def settled_after(limits: list[int], low: float, high: float) -> int:
    """How many windows passed before the limit entered ``[low, high]`` for good (one more than all if never)."""
    stray = [index for index, limit in enumerate(limits) if not low <= limit <= high]
    return stray[-1] + 2 if stray else 1


WIDE = LimiterSettings(ceiling=16384)
"""A ceiling above every modelled server's knee, so that the limit settles where latency does, not at the ceiling."""


@pytest.mark.parametrize(("slots", "windows"), [(64, 4), (512, 7), (4096, 10)])
def test_limit_settles_just_above_the_slots(slots: int, windows: int) -> None:
    """From 16, slow start doubles past the slots and its first window there cuts straight back to the target; the
    limit then holds at 1.1 to 1.25 x slots (latency within target, past the point where it may grow)."""
    client = Client(GradientLimiter(WIDE), Server(slots))
    limits = client.run(60)
    assert settled_after(limits, slots, 1.25 * slots) == windows
    assert all(1.1 * slots <= limit <= 1.25 * slots for limit in limits[windows + 4 :])
    assert not client.limiter.slow_start


def queued_run(limiter: GradientLimiter, slots: int, seconds: float, request_s: float) -> tuple[list[int], float]:
    """A closer model, where latency lags the limit: requests of 50 to 150 tokens (``request_s`` for 100) take the
    first free of ``slots`` in the order sent; the client sends whenever fewer than the limit are in flight. Returns
    the limit after each window and the median seconds a request took over the second half of the run."""
    draw = random.Random(0)
    free_at = [0.0] * slots  # when each slot is next free
    flying: list[tuple[float, float, int, int]] = []  # (done, sent, in flight when sent, tokens)
    limits: list[int] = []
    took: list[tuple[float, float]] = []
    now = 0.0
    while now < seconds:
        while len(flying) < limiter.limit:
            tokens = draw.randint(50, 150)
            done = max(now, heapq.heappop(free_at)) + request_s * tokens / 100
            heapq.heappush(free_at, done)
            heapq.heappush(flying, (done, now, len(flying) + 1, tokens))
        now, sent, in_flight, tokens = heapq.heappop(flying)
        closed = limiter.windows
        limiter.record((now - sent) / tokens, in_flight, now, tokens)
        took.append((now, now - sent))
        limits += [limiter.limit] * (limiter.windows - closed)
    return limits, statistics.median(seconds_taken for at, seconds_taken in took if at > seconds / 2)


@pytest.mark.parametrize(("slots", "request_s"), [(64, 0.5), (512, 4.0)])
def test_slow_start_overshoots_little_when_latency_lags(slots: int, request_s: float) -> None:
    """Latency shows a doubling only once requests sent at the new limit complete, a request-time later; judging
    those apart keeps slow start's peak within 2.5 x slots, and the limit then holds where requests barely queue."""
    limits, median_s = queued_run(GradientLimiter(WIDE), slots, 300, request_s)
    assert max(limits) <= 2.5 * slots
    settled = limits[len(limits) // 2 :]
    assert slots <= min(settled) and max(settled) <= 1.25 * slots
    assert median_s <= 1.25 * request_s


def test_the_ceiling_holds_a_server_larger_than_it() -> None:
    """A 4096-slot server under the default ceiling of 4096: reached in 8 windows of slow start, held there."""
    limits = Client(GradientLimiter(LimiterSettings()), Server(4096)).run(30)
    assert limits[:8] == [32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert set(limits[8:]) == {4096}


def test_target_sets_how_much_queue_the_limit_keeps() -> None:
    """With target 1.3 the limit settles at 1.3 x slots instead of 1.1 x."""
    limits = Client(GradientLimiter(LimiterSettings(target=1.3, tolerance=1.6)), Server(512)).run(40)
    assert all(1.29 * 512 <= limit <= 1.31 * 512 for limit in limits[10:])


def test_limit_follows_capacity_halving_within_three_windows() -> None:
    """Slots fall from 512 to 256: the limit falls at most 20% a window, to 1.18 x 256, in three windows."""
    server = Server(512)
    client = Client(GradientLimiter(WIDE), server)
    assert set(client.run(30)[-10:]) == {587}
    server.slots = 256
    limits = client.run(30)
    assert settled_after(limits, 256, 1.2 * 256) == 3
    assert limits[:3] == [470, 376, 301]


def test_slower_server_resets_the_baseline_at_the_minimum() -> None:
    """Every token takes twice as long (a bigger model): latency past tolerance at any load pins the limit down to
    the minimum, whose window resets the baseline; slow start then brings the limit back within 39 windows."""
    server = Server(512)
    client = Client(GradientLimiter(WIDE), server)
    client.run(30)
    server.base *= 2
    limits = client.run(80)
    assert min(limits) == 1
    assert settled_after(limits, 512, 1.15 * 512) == 39
    assert not client.limiter.slow_start


def test_refusals_keep_the_limit_below_the_refusal_point() -> None:
    """A server that answers 429 beyond 100 in flight: slow start ends at 128, then the limit saws between 52 and
    102 (backoff 0.5, regrowth by sqrt) instead of climbing to the ceiling."""
    client = Client(GradientLimiter(WIDE), Server(512, refuse_above=100))
    limits = client.run(200)
    assert max(limits) == 128
    after = limits[limits.index(128) + 1 :]
    assert min(after) >= 52
    assert max(after) <= 102
    assert 70 <= sum(after) / len(after) <= 80
    assert not client.limiter.slow_start


def test_a_rate_limit_is_cut_gently() -> None:
    """Refusals that say when to come back (a rate limit, not an overload) cut the limit by 0.8: it saws between 82
    and 104 around the 100 the server admits (mean 92), where halving saws between 52 and 102 (mean 76)."""
    client = Client(GradientLimiter(WIDE), Server(512, refuse_above=100, rate_limited=True))
    limits = client.run(200)
    after = limits[limits.index(max(limits)) + 1 :]
    assert min(after) >= 82
    assert max(after) <= 104
    assert sum(after) / len(after) >= 90


def test_application_limited_run_does_not_inflate_its_limit() -> None:
    """A client with only 10 requests to send keeps the limit at twice that; with more, slow start takes over."""
    client = Client(GradientLimiter(WIDE), Server(512), demand=10)
    assert set(client.run(50)) == {20}
    assert client.limiter.slow_start
    client.demand = None
    assert settled_after(client.run(30), 512, 1.15 * 512) == 6


OPERATIONS = st.lists(
    st.tuples(
        st.floats(0, 3),  # seconds since the previous call
        st.one_of(st.none(), st.floats(1e-5, 10)),  # None: an overload; else a latency per token
        st.integers(0, 10_000),  # in flight
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(initial=st.integers(0, 200), minimum=st.integers(1, 8), span=st.integers(0, 100), operations=OPERATIONS)
def test_limit_stays_within_bounds(
    initial: int, minimum: int, span: int, operations: list[tuple[float, float | None, int]]
) -> None:
    """Whatever latencies and overloads arrive, the limit is an integer within [minimum, ceiling]."""
    limiter = GradientLimiter(LimiterSettings(initial=initial, minimum=minimum, ceiling=minimum + span))
    now = 0.0
    for elapsed, latency, in_flight in operations:
        now += elapsed
        if latency is None:
            limiter.overloaded(now)
        else:
            limiter.record(latency, in_flight, now)
        assert isinstance(limiter.limit, int)
        assert minimum <= limiter.limit <= minimum + span


def test_overloads_at_the_minimum_leave_it_there() -> None:
    """Refusals at the minimum, window after window, do not take the limit below it."""
    limiter = GradientLimiter(LimiterSettings(initial=4, minimum=2))
    for second in range(20):
        limiter.overloaded(5.0 * second)
        assert limiter.limit == 2


def window(limiter: GradientLimiter, start: float, latency: float, in_flight: int = 1) -> None:
    """Close one window: 16 requests of ``latency`` over one second from ``start``."""
    for index in range(16):
        limiter.record(latency, in_flight, start + index / 15)


def test_latency_is_none_until_a_window_closes_then_the_last_window() -> None:
    """The display's latency is the mean of the last closed window."""
    limiter = GradientLimiter(LimiterSettings())
    for index in range(15):
        limiter.record(0.02, 1, index / 10)
    assert limiter.latency is None  # 15 requests in 1.4 s: one short of a window
    limiter.record(0.04, 1, 1.5)
    assert limiter.latency == pytest.approx((15 * 0.02 + 0.04) / 16)
    window(limiter, 2.0, 0.03)
    assert limiter.latency == pytest.approx(0.03)
    assert limiter.windows == 2


def test_a_window_closes_after_five_window_lengths_with_any_request() -> None:
    """A trickle of requests still closes windows."""
    limiter = GradientLimiter(LimiterSettings())
    limiter.record(0.02, 1, 0.0)
    limiter.record(0.02, 1, 4.9)
    assert limiter.windows == 0
    limiter.record(0.05, 1, 5.0)
    assert limiter.windows == 1
    assert limiter.latency == pytest.approx(0.03)


def test_a_burst_of_overloads_halves_the_limit_once_per_window() -> None:
    """Ten refusals in one window are one signal; the next window's refusals are another; overloads end slow start."""
    limiter = GradientLimiter(LimiterSettings(initial=64))
    for _ in range(10):
        limiter.overloaded(0.5)
    limiter.overloaded(1.4)
    assert limiter.limit == 32
    assert not limiter.slow_start
    window(limiter, 2.0, 0.02)  # one request in flight: the window cannot raise the limit
    limiter.overloaded(3.5)
    limiter.overloaded(3.6)
    assert limiter.limit == 16
    limiter.overloaded(3.5 + 5.0)  # nothing completed for five window lengths: a new signal
    assert limiter.limit == 8
