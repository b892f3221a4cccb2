"""The ``tau2`` workflow's sections of ``matrix report``: reward and pass^k per domain, termination reasons, tool
calls per task and tokens per role. The records are read once and tallied as they pass (counts per domain, reason
and role, and each task's trials and successes), never kept; a field a record lacks (an engine error's record holds
only ``id``, ``status`` and ``reason``) leaves that record out of what needs the field.

Rewards follow tau2's metrics: a simulation without a reward (its step failed) counts 0, as tau2's runner counts a
failed sample; a trial succeeds when its reward is 1 (tau2's ``is_successful``); pass^k is tau2's ``pass_hat_k``
averaged over a domain's tasks, for k up to the fewest trials any of its tasks has.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from matrix_core import Bars, Histogram, Lines, ReportSection, Table
from matrix_tau2.workflow import TERMINATION_STATUS

TOKEN_KINDS = ("prompt", "completion")
"""The kinds of a record's ``tokens`` keys (``<role>_<kind>``): tokens in, tokens out."""
MAX_BINS = 30
"""The most bins of the tool-call histogram; its bins are whole numbers of calls, widened to stay under this."""


@dataclass
class Tally:
    """What the sections need of the records, counted one record at a time."""

    succeeded: Callable[[float], bool]
    """Whether a reward is a success (tau2's ``is_successful``)."""
    trials: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    """Per domain, the trials (simulations) of each task id."""
    successes: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    """Per domain, the successful trials of each task id."""
    reward: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    """The sum of rewards per domain."""
    unattributed: int = 0
    """Records that name no domain or task id (the engine's error records)."""
    termination: Counter[str] = field(default_factory=Counter)
    tool_calls: Counter[int] = field(default_factory=Counter)
    """Simulations per number of tool calls."""
    tokens_in: Counter[str] = field(default_factory=Counter)
    tokens_out: Counter[str] = field(default_factory=Counter)
    with_tokens: int = 0
    """Records that count tokens."""

    def add(self, record: dict[str, Any]) -> None:
        """Count one record."""
        domain, task_id = record.get("domain"), record.get("task_id")
        if domain is None or task_id is None:
            self.unattributed += 1
        else:
            domain, task_id, reward = str(domain), str(task_id), _reward(record)
            self.trials[domain][task_id] += 1
            self.successes[domain][task_id] += self.succeeded(reward)
            self.reward[domain] += reward
        if isinstance(reason := record.get("termination_reason"), str):
            self.termination[reason] += 1
        if isinstance(messages := record.get("messages"), list):
            self.tool_calls[_count_tool_calls(messages)] += 1
        if isinstance(tokens := record.get("tokens"), dict):
            self._add_tokens(tokens)

    def _add_tokens(self, tokens: dict[str, Any]) -> None:
        """Add a record's ``<role>_prompt`` and ``<role>_completion`` counts to its roles' totals."""
        self.with_tokens += 1
        for key, value in tokens.items():
            role, _, kind = key.rpartition("_")
            if role and kind in TOKEN_KINDS and isinstance(value, int):
                (self.tokens_in if kind == "prompt" else self.tokens_out)[role] += value


def _reward(record: dict[str, Any]) -> float:
    """The record's reward, 0 when it has none."""
    info = record.get("reward_info")
    reward = info.get("reward") if isinstance(info, dict) else None
    return float(reward) if isinstance(reward, int | float) else 0.0


def _count_tool_calls(messages: list[Any]) -> int:
    """The tool calls in a trajectory, the assistant's and the user's."""
    return sum(
        len(message["tool_calls"])
        for message in messages
        if isinstance(message, dict) and isinstance(message.get("tool_calls"), list)
    )


def sections(records: Iterable[dict[str, Any]]) -> list[ReportSection]:
    """The report's sections for ``records``, read once; a section with nothing to show is left out."""
    from tau2.metrics.agent_metrics import is_successful

    tally = Tally(succeeded=is_successful)
    for record in records:
        tally.add(record)
    curves = {domain: pass_hat_k(tally.trials[domain], tally.successes[domain]) for domain in sorted(tally.trials)}
    built = [_rewards(tally, curves), _pass_hat_k(curves), _termination(tally), _tool_calls(tally), _tokens(tally)]
    return [section for section in built if section is not None]


def pass_hat_k(trials: Counter[str], successes: Counter[str]) -> list[float]:
    """tau2's pass^k over tasks with these trials and successes, for k = 1 up to the fewest trials of a task: the
    mean over tasks of C(successes, k) / C(trials, k)."""
    from tau2.metrics.agent_metrics import pass_hat_k as task_pass_hat_k

    most = min(trials.values(), default=0)
    return [
        sum(task_pass_hat_k(n, successes[task], k) for task, n in trials.items()) / len(trials)
        for k in range(1, most + 1)
    ]


def _rewards(tally: Tally, curves: dict[str, list[float]]) -> ReportSection | None:
    """Per domain: tasks, simulations, mean reward and pass^1, as a table and the mean reward as bars."""
    if not curves:
        return None
    rows = []
    for domain, curve in curves.items():
        simulations = sum(tally.trials[domain].values())
        mean = round(tally.reward[domain] / simulations, 3)
        rows.append([domain, len(tally.trials[domain]), simulations, mean, round(curve[0], 3)])
    caption = "A simulation without a reward counts 0; pass^1: the mean over tasks of each one's share of trials solved"
    if tally.unattributed:
        caption += f"; {tally.unattributed} records that name no domain or task are left out"
    return ReportSection(
        "Reward by domain",
        [
            Table(["domain", "tasks", "simulations", "mean reward", "pass^1"], rows, caption=caption),
            Bars(list(curves), [row[3] for row in rows], title="Mean reward by domain", y_label="mean reward"),
        ],
    )


def _pass_hat_k(curves: dict[str, list[float]]) -> ReportSection | None:
    """pass^k per domain, one line each over k = 1 up to the most trials any domain allows (a gap past its own)."""
    most = max((len(curve) for curve in curves.values()), default=0)
    if not most:
        return None
    ks = list(range(1, most + 1))
    series = {
        domain: [*(round(v, 4) for v in curve), *[None] * (most - len(curve))] for domain, curve in curves.items()
    }
    rows = [[domain, *("" if v is None else round(v, 3) for v in values)] for domain, values in series.items()]
    return ReportSection(
        "pass^k",
        [
            Lines(ks, series, title="pass^k by domain", x_label="k (trials that must all succeed)", y_label="pass^k"),
            Table(
                ["domain", *(f"pass^{k}" for k in ks)],
                rows,
                caption="The chance that k trials of a task, drawn from its trials, all succeed (reward 1), averaged "
                "over tasks; k goes up to the fewest trials of any of a domain's tasks",
            ),
        ],
    )


def _termination(tally: Tally) -> ReportSection | None:
    """Simulations per tau2 termination reason, most frequent first, with the Matrix status each maps to."""
    if not tally.termination:
        return None
    counts = tally.termination.most_common()
    total = sum(tally.termination.values())
    return ReportSection(
        "Termination reasons",
        [
            Bars([reason for reason, _ in counts], [n for _, n in counts], y_label="simulations"),
            Table(
                ["termination reason", "status", "simulations", "share"],
                [[reason, TERMINATION_STATUS.get(reason, ""), n, round(n / total, 3)] for reason, n in counts],
            ),
        ],
    )


def _tool_calls(tally: Tally) -> ReportSection | None:
    """The distribution of tool calls per simulation, in bins of whole numbers of calls."""
    if not tally.tool_calls:
        return None
    values: list[float] = []
    for calls, n in sorted(tally.tool_calls.items()):
        values += [float(calls)] * n  # one float object shared by its n entries
    low, high = min(tally.tool_calls), max(tally.tool_calls)
    width = -(-(high - low + 1) // MAX_BINS)  # ceiling division
    edges = list(range(low, high + width + 1, width))
    return ReportSection(
        "Tool calls per task",
        [Histogram(values, x_label="tool calls in one simulation (the assistant's and the user's)", bins=edges)],
    )


def _tokens(tally: Tally) -> ReportSection | None:
    """Tokens in and out per role, in all and per simulation."""
    roles = sorted(tally.tokens_in.keys() | tally.tokens_out.keys())
    if not roles:
        return None
    rows = []
    for role in roles:
        per_task = (tally.tokens_in[role] + tally.tokens_out[role]) / tally.with_tokens
        rows.append([role, tally.tokens_in[role], tally.tokens_out[role], round(per_task, 1)])
    caption = f"per task: tokens in and out, averaged over the {tally.with_tokens} simulations that count tokens"
    return ReportSection("Tokens per role", [Table(["role", "tokens in", "tokens out", "per task"], rows, caption)])
