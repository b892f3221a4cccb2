"""Rewards: tau2's ``evaluate_simulation`` with ``EvaluationType.ALL``, the gold side computed once per task.

tau2's environment evaluator builds two environments per simulation: the *predicted* one (the trajectory's tool
calls replayed on a fresh database) and the *gold* one (the task's expected actions replayed). The gold one depends
only on the task, yet costs as much as the other (parsing the domain database, then the actions). Here the
evaluator runs unchanged, but under a domain name whose environment constructor hands it, for a task already
scored in this process, a stand-in gold environment that answers with the database hashes the real one gave the
first time. Nothing else differs, so every reward is tau2's; the parity tests check it against tau2 directly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from matrix_tau2 import catalog

if TYPE_CHECKING:
    from tau2.environment.environment import Environment

CACHED_DOMAIN_SUFFIX = "@matrix-gold-cache"
"""The names under which each domain is registered in tau2's registry with the caching constructor."""

_current = threading.local()  # the (domain, task id) being scored on this thread
_registered: set[str] = set()
_registering = threading.Lock()


class GoldCache:
    """The gold database hashes of the tasks scored in this process, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._hashes: OrderedDict[tuple[str, str], dict[str, str | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> dict[str, str | None] | None:
        with self._lock:
            found = self._hashes.get(key)
            if found is not None:
                self._hashes.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], hashes: dict[str, str | None]) -> None:
        with self._lock:
            self._hashes[key] = hashes
            while len(self._hashes) > self.capacity:
                self._hashes.popitem(last=False)


class Scorer:
    """Scores finished simulations as tau2 does."""

    def __init__(self, gold_cache_size: int = 4096) -> None:
        self.gold = GoldCache(gold_cache_size)

    def score(self, domain: str, task_id: str, simulation: dict[str, Any]) -> dict[str, Any]:
        """tau2's ``RewardInfo`` (JSON) for ``simulation``, a ``SimulationRun`` dump of task ``task_id``."""
        from tau2.data_model.simulation import SimulationRun
        from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

        run = SimulationRun.model_validate(simulation)
        spec = catalog.task(domain, task_id)
        _current.scope = (self.gold, (domain, task_id))
        try:
            reward_info = evaluate_simulation(
                simulation=run,
                task=spec,
                evaluation_type=EvaluationType.ALL,
                solo_mode=False,
                domain=_cached_domain(domain),
            )
        finally:
            _current.scope = None
        return reward_info.model_dump(mode="json")


def _cached_domain(domain: str) -> str:
    """Register ``domain`` once in tau2's registry under a second name whose constructor caches the gold side."""
    name = domain + CACHED_DOMAIN_SUFFIX
    with _registering:
        if name not in _registered:
            tau2 = catalog.registry()
            tau2.register_domain(_CachingConstructor(tau2.get_env_constructor(domain)), name)
            _registered.add(name)
    return name


class _CachingConstructor:
    """tau2's environment evaluator calls its constructor twice: ``constructor(solo_mode=...)`` for the predicted
    environment, then ``constructor()`` for the gold one. The first call is passed through; the second returns
    the gold environment recorded once per task."""

    def __init__(self, constructor: Callable[..., Environment]) -> None:
        self.constructor = constructor

    def __call__(self, **kwargs: Any) -> Any:
        scope = getattr(_current, "scope", None)
        if kwargs or scope is None:
            return self.constructor(**kwargs)
        cache, key = scope
        hashes = cache.get(key)
        if hashes is not None:
            cache.hits += 1
            return _RecordedGold(hashes)
        cache.misses += 1
        return _RecordingGold(self.constructor(), lambda recorded: cache.put(key, recorded))


class _RecordingGold:
    """A real gold environment that records the database hashes it reports."""

    def __init__(self, environment: Environment, save: Callable[[dict[str, str | None]], None]) -> None:
        self._environment = environment
        self._save = save
        self._hashes: dict[str, str | None] = {}

    def set_state(self, **kwargs: Any) -> None:
        self._environment.set_state(**kwargs)

    def make_tool_call(self, **kwargs: Any) -> Any:
        return self._environment.make_tool_call(**kwargs)

    def get_db_hash(self) -> str | None:
        return self._record("db", self._environment.get_db_hash())

    def get_user_db_hash(self) -> str | None:
        return self._record("user_db", self._environment.get_user_db_hash())

    def _record(self, key: str, value: str | None) -> str | None:
        self._hashes[key] = value
        if len(self._hashes) == 2:
            self._save(dict(self._hashes))
        return value


class _RecordedGold:
    """The gold environment of a task scored before: only the hashes the evaluator compares."""

    def __init__(self, hashes: dict[str, str | None]) -> None:
        self._hashes = hashes

    def set_state(self, **kwargs: Any) -> None:
        """Already applied when the hashes were recorded."""

    def make_tool_call(self, **kwargs: Any) -> None:
        """Already applied when the hashes were recorded."""

    def get_db_hash(self) -> str | None:
        return self._hashes["db"]

    def get_user_db_hash(self) -> str | None:
        return self._hashes["user_db"]
