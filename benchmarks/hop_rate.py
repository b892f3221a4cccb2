"""Hop rate: how many agent steps per second the engine moves when agents do no I/O (goal: >= 10,000 hops/s on
2 cores), with and without coalesced sends, at several numbers of tasks in flight.

    python benchmarks/hop_rate.py                 # 100 / 1,000 / 10,000 tasks in flight, 3 runs each
    python benchmarks/hop_rate.py --smoke         # a few seconds, for the test suite

Prints one line per result (the median hops/s of coalesced sends over the repeats, the other modes beside it and
the ratios taken side by side in each repeat) and writes ``results/hop_rate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from results import Result, Spread, add_common_flags, write

HERE = Path(__file__).parent


MODES = {"one_call_per_task": ("false", 0.0), "coalesced_same_turn": ("true", 0.0), "coalesced_2ms": ("true", 2.0)}
"""How sends are made: each task its own Ray call; tasks ready in the same event-loop turn in one call (the
default); tasks queued within a 2 ms window in one call."""


def measure(in_flight: int, mode: str, hops: int, replicas: int | None, workdir: Path) -> float:
    """One run of ``in_flight`` tasks (all admitted at once) of ``hops`` hops; returns hops per second."""
    from matrix_core import config
    from matrix_core.engine.run import run_workflow
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    source = workdir / f"in-{in_flight}.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(in_flight)))
    coalesce, window_ms = MODES[mode]
    output = workdir / f"out-{in_flight}-{mode}-{os.urandom(4).hex()}.jsonl"
    overrides = [
        f"input.path={source}",
        f"output.path={output}",
        "backend.type=relay.none",
        f"relay.hops={hops}",
        f"run.max_concurrency={in_flight}",
        f"run.coalesce={coalesce}",
        f"run.coalesce_window_ms={window_ms}",
        "run.quiet=true",
    ]
    if replicas is not None:  # only when --replicas asks for an experiment with more actors per role
        overrides += [f"agents.{role}.replicas={replicas}" for role in "abc"]
    resolved = config.resolve(registry.get("orchestrators", "relay"), registry, config.parse_overrides(overrides))
    metrics = run_workflow(resolved, registry)
    assert metrics.status == {"success": in_flight}, metrics.status
    return metrics.hops / metrics.engine.flow_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--hops", type=int, default=20)
    parser.add_argument("--replicas", type=int, help="actors per role (default: unset, what a user gets)")
    args = parser.parse_args()
    sizes, runs = ([50], 1) if args.smoke else ([100, 1_000, 10_000], args.repeats)

    import relay

    from matrix_core.testing import local_ray, register_plugin

    results = []
    with local_ray([str(HERE)]), register_plugin(relay, name="relay"), tempfile.TemporaryDirectory() as workdir:
        for in_flight in sizes:
            rates: dict[str, list[float]] = {mode: [] for mode in MODES}
            for _ in range(runs):  # the modes side by side in each repeat, so their ratios share its conditions
                for mode in MODES:
                    rates[mode].append(measure(in_flight, mode, args.hops, args.replicas, Path(workdir)))
            ours = rates.pop("coalesced_same_turn")
            results.append(
                Result(
                    name="hop_rate",
                    metric="hops_per_s",
                    params={"in_flight": in_flight, "hops_per_task": args.hops, "mode": "coalesced_same_turn"},
                    ours=Spread.of(ours),
                    baselines={mode: Spread.of(values) for mode, values in rates.items()},
                    ratios={
                        mode: Spread.of([o / v for o, v in zip(ours, values, strict=True)])
                        for mode, values in rates.items()
                    },
                    goal=">= 10000 hops/s",
                    goal_value=10_000,
                    goal_on=("ours",),
                )
            )
    write(f"hop_rate{args.suffix}", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
