"""Benchmark 5, memory and scale: the engine's memory per in-flight task (goal: <= 20 KB plus history), and a long
run whose memory stays flat.

    python benchmarks/memory.py                  # 10,000 in flight; 100,000 tasks at 1,000 in flight
    python benchmarks/memory.py --smoke

Per task, within one run: the :mod:`hold` workflow keeps every admitted task waiting in its agent at once, and
the agent stamps each task with how many it held when the task arrived and its process's resident memory then; the
memory between a tenth full and the fullest, over the tasks between, is the agent's cost of one more task in flight
(nothing else changes in that process meanwhile). The collector keeps each in-flight task's parsed input row (to
re-admit it if lost): its size, measured with tracemalloc, is added. The peak resident memory of all the engine's
actors (agent, collector, writer) is sampled beside it.
Flat memory: 100,000 :mod:`relay` tasks (a few hops each, no I/O) flow through; the actors' memory late in the run
(80% to 100% of the output written) is compared with early on (10% to 30%).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import engine_runs
import psutil
from results import Result, Spread, add_common_flags, write

HERE = Path(__file__).parent
ACTORS = ("ray::AgentActor", "ray::Collector", "ray::Writer")
"""Process titles of the engine's actors (Ray names a worker after the actor it hosts)."""


def actors_rss() -> int:
    """Resident bytes of the engine's actor processes in this process's own Ray (others may run beside it)."""
    total = 0
    for process in psutil.Process().children(recursive=True):
        try:
            if process.cmdline()[:1] and process.cmdline()[0].startswith(ACTORS):
                total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # an actor that just ended
    return total


@contextmanager
def sampled(
    output: Path, every_s: float = 0.1, measure: Callable[[], int] = actors_rss
) -> Iterator[list[tuple[int, int]]]:
    """Sample ``measure`` (by default :func:`actors_rss`) in a thread while the block runs; yields the
    ``(output bytes, measured bytes)`` samples: the output's size says how far the run had got."""
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((output.stat().st_size if output.exists() else 0, measure()))
            stop.wait(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def rows(path: Path, count: int) -> Path:
    """``count`` rows with nothing but an id."""
    path.write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(count)))
    return path


def per_task_rss(in_flight: int, hold_s: float, workdir: Path) -> tuple[float, int]:
    """KB of the holding agent's memory per task held, with ``in_flight`` held at once, and the peak bytes of all
    the engine's actors meanwhile."""
    source = rows(workdir / f"hold-{in_flight}.jsonl", in_flight)
    output = workdir / f"hold-{in_flight}-{time.monotonic_ns()}.jsonl"
    with sampled(output) as samples:
        engine_runs.run(
            "hold",
            [
                f"input.path={source}",
                f"output.path={output}",
                "backend.type=relay.none",  # the holder calls no model
                f"hold.seconds={hold_s}",
                f"run.max_concurrency={in_flight}",
                "run.quiet=true",
            ],
        )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    fullest = max(records, key=lambda record: record["held_at_arrival"])
    if fullest["held_at_arrival"] < 0.9 * in_flight:
        raise RuntimeError(f"only {fullest['held_at_arrival']} of {in_flight} tasks held at once: hold them longer")
    # From a tenth full, not the first arrival: the first batch of messages is already unpacked when it is stamped.
    first = min(
        (record for record in records if record["held_at_arrival"] >= in_flight // 10),
        key=lambda record: record["held_at_arrival"],
    )
    held = fullest["held_at_arrival"] - first["held_at_arrival"]
    if held < 1:
        raise RuntimeError(f"no tasks arrived between a tenth full and the fullest of {in_flight}: hold them longer")
    return (fullest["rss_at_arrival"] - first["rss_at_arrival"]) / held / 1024, max(rss for _, rss in samples)


def collector_kb_per_row(source: Path) -> float:
    """KB the collector keeps per in-flight task: the task's input row, parsed, kept for re-admission."""
    lines = source.read_text().splitlines()
    tracemalloc.start()
    try:
        in_flight = {str(number): json.loads(line) for number, line in enumerate(lines)}
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del in_flight
    return kept / len(lines) / 1024


def flat_run(tasks: int, in_flight: int, hops: int, workdir: Path) -> tuple[float, float, float]:
    """Actor memory (MB) early in a long relay run (10% to 30% of its output written) and late (80% to the end),
    and its tasks/s."""
    source = rows(workdir / f"relay-{tasks}.jsonl", tasks)
    output = workdir / f"relay-{tasks}-{time.monotonic_ns()}.jsonl"
    with sampled(output) as samples:
        metrics = engine_runs.run(
            "relay",
            [
                f"input.path={source}",
                f"output.path={output}",
                "backend.type=relay.none",
                f"relay.hops={hops}",
                f"run.max_concurrency={in_flight}",
                "run.quiet=true",
            ],
        )
    size = output.stat().st_size
    first = [rss for written, rss in samples if 0.1 * size <= written <= 0.3 * size]
    last = [rss for written, rss in samples if 0.8 * size <= written < size]
    if not first or not last:
        raise RuntimeError(f"too few memory samples ({len(samples)}): make the run longer")
    return sum(first) / len(first) / 2**20, sum(last) / len(last) / 2**20, tasks / metrics.engine.flow_time_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--in-flight", type=int, default=10_000)
    parser.add_argument("--flat-in-flight", type=int, default=1_000, help="in flight in the flat-memory run")
    parser.add_argument("--hold-s", type=float, default=4.0, help="how long each task is held")
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks in the flat-memory run")
    parser.add_argument("--hops", type=int, default=4, help="hops per task in the flat-memory run")
    args = parser.parse_args()
    if args.smoke:
        args.in_flight, args.flat_in_flight, args.hold_s, args.tasks, args.repeats = 400, 100, 0.5, 20_000, 1

    import hold
    import relay

    from matrix_core.testing import local_ray, register_plugin

    per_task, agent_kb, peak_mb, growth, rates, first_mb, last_mb = [], [], [], [], [], [], []
    with (
        local_ray([str(HERE)]),
        register_plugin(hold, name="hold"),
        register_plugin(relay, name="relay"),
        tempfile.TemporaryDirectory() as workdir,
    ):
        collector_kb = collector_kb_per_row(rows(Path(workdir) / "collector.jsonl", args.in_flight))
        for _ in range(args.repeats):
            kb, peak = per_task_rss(args.in_flight, args.hold_s, Path(workdir))
            per_task.append(kb + collector_kb)
            agent_kb.append(kb)
            peak_mb.append(peak / 2**20)
            first, last, rate = flat_run(args.tasks, args.flat_in_flight, args.hops, Path(workdir))
            first_mb.append(first)
            last_mb.append(last)
            growth.append(last / first)
            rates.append(rate)
    results = [
        Result(
            name="memory_per_task",
            metric="kb_per_in_flight_task",
            params={"in_flight": args.in_flight, "history": 0},
            ours=Spread.of(per_task),
            baselines={
                "agent_kb": Spread.of(agent_kb),
                "collector_kb": Spread.of([collector_kb]),
                "all_actors_peak_mb": Spread.of(peak_mb),
            },
            goal="<= 20 KB",
            goal_value=20.0,
            goal_on=("ours",),
            notes="agent_kb: the holding agent's RSS from a tenth full to fullest, per task between, in one run; "
            "collector_kb: the parsed input row the collector keeps per task (tracemalloc); ours is their sum; "
            "all_actors_peak_mb: the engine's actors (agent, collector, writer) together, sampled every 0.1 s",
        ),
        Result(
            name="flat_memory",
            metric="late_over_early_rss",
            params={"tasks": args.tasks, "in_flight": args.flat_in_flight, "hops": args.hops},
            ours=Spread.of(growth),
            baselines={"early_mb": Spread.of(first_mb), "late_mb": Spread.of(last_mb)},
            goal="<= 1.10",
            goal_value=1.10,
            goal_on=("ours",),
            notes=f"tasks/s of the run: {Spread.of(rates).text(0)}",
        ),
    ]
    write(f"memory{args.suffix}", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
