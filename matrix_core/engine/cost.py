"""What a run's tokens cost, where the backends say their price (``backend.price_in`` / ``price_out``, per
million prompt / completion tokens, per role's backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matrix_core.engine.messages import ActorStats, AgentSpec


@dataclass(frozen=True)
class Price:
    """A backend's price of a million tokens in and out; an unset one counts as 0."""

    per_million_in: float
    per_million_out: float

    def of(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost."""
        return (prompt_tokens * self.per_million_in + completion_tokens * self.per_million_out) / 1e6


def prices_of(specs: Mapping[str, AgentSpec]) -> dict[str, Price]:
    """Each role's price, for the roles whose backend sets one (none priced: the run has no cost)."""
    prices = {}
    for role, spec in specs.items():
        price_in, price_out = spec.backend_config.get("price_in"), spec.backend_config.get("price_out")
        if price_in is not None or price_out is not None:
            prices[role] = Price(price_in or 0.0, price_out or 0.0)
    return prices


def cost_of(prices: Mapping[str, Price], stats: Mapping[str, Sequence[ActorStats]]) -> float | None:
    """What the priced roles' actors spent so far (None when no role is priced)."""
    if not prices:
        return None
    spent = 0.0
    for role, price in prices.items():
        actors = stats.get(role, ())
        spent += price.of(sum(s.prompt_tokens for s in actors), sum(s.completion_tokens for s in actors))
    return spent
