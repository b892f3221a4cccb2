"""Rewards: tau2's ``evaluate_simulation`` with ``EvaluationType.ALL``, without building what the run already has.

tau2's environment evaluator builds two environments per simulation: the *predicted* one (the trajectory's tool
calls replayed on a fresh database) and the *gold* one (the task's expected actions replayed). Each costs a parse of
the domain database. Here the evaluator runs unchanged, but under a domain name whose environment constructor hands
it stand-ins where the answer is already known:

- the predicted side: the tool executor held the very environment the conversation's calls changed (the replay
  would rebuild it call by call); when the conversation ends it records what the evaluator reads of it
  (:func:`predicted_state`: its database hashes, the task's environment assertions), and the stand-in answers
  with that. A task whose environment is gone (evicted, its actor died) is replayed as tau2 does.
- the gold side, which depends only on the task: computed once per task and reward actor, then answered from the
  hashes the real one gave the first time.

Nothing else differs, so every reward is tau2's; the parity tests check it against tau2 directly.
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


def predicted_state(environment: Environment, domain: str, task_id: str) -> dict[str, Any] | None:
    """What tau2's environment evaluator reads of the predicted environment, read from the environment the
    conversation left: its database hashes and the task's environment assertions, in the evaluator's order. None
    when the task has nothing for it to check, or when an assertion raises (the evaluator then replays, and raises
    as tau2 does)."""
    criteria = catalog.task(domain, task_id).evaluation_criteria
    if criteria is None or (criteria.actions is None and criteria.env_assertions is None):
        return None
    hashes = {"db": environment.get_db_hash(), "user_db": environment.get_user_db_hash()}
    try:
        assertions = [
            environment.run_env_assertion(assertion, raise_assertion_error=False)
            for assertion in criteria.env_assertions or []
        ]
    except Exception:  # tau2's tools raise what they like: the replay reproduces it
        return None
    return {**hashes, "assertions": assertions}


class Scorer:
    """Scores finished simulations as tau2 does."""

    def __init__(self, gold_cache_size: int = 4096) -> None:
        self.gold = GoldCache(gold_cache_size)
        self.predicted_given = 0
        """Simulations scored from a recorded predicted state (not replayed)."""

    def score(
        self, domain: str, task_id: str, simulation: dict[str, Any], predicted: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """tau2's ``RewardInfo`` (JSON) for ``simulation``, a ``SimulationRun`` dump of task ``task_id``;
        ``predicted`` is :func:`predicted_state` of the environment the conversation left, when it is known."""
        from tau2.data_model.simulation import SimulationRun
        from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

        run = SimulationRun.model_validate(simulation)
        spec = catalog.task(domain, task_id)
        if predicted is not None:
            self.predicted_given += 1
        _current.scope = (self.gold, (domain, task_id), predicted)
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
    environment, then ``constructor()`` for the gold one. The first returns the recorded predicted state where
    there is one (else a real environment, which the evaluator replays); the second the gold environment recorded
    once per task."""

    def __init__(self, constructor: Callable[..., Environment]) -> None:
        self.constructor = constructor

    def __call__(self, **kwargs: Any) -> Any:
        scope = getattr(_current, "scope", None)
        if scope is None:
            return self.constructor(**kwargs)
        cache, key, predicted = scope
        if kwargs:
            return _RecordedPredicted(predicted) if predicted is not None else self.constructor(**kwargs)
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


class _RecordedPredicted:
    """The environment a conversation left, as :func:`predicted_state` recorded it: what the evaluator reads."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state
        self._assertions = iter(state["assertions"])

    def set_state(self, **kwargs: Any) -> None:
        """The conversation's calls already made this state."""

    def get_db_hash(self) -> str | None:
        return self._state["db"]

    def get_user_db_hash(self) -> str | None:
        return self._state["user_db"]

    def run_env_assertion(self, assertion: Any, raise_assertion_error: bool = False) -> bool:
        """The task's assertions, asked in order, as the environment answered them."""
        return next(self._assertions)
