"""Benchmark 9, inputs of any size: memory that does not grow with the input, a resume that does not parse what it
finished, and partitions that add CPU.

    python benchmarks/scale.py               # 1M and 10M rows; resume at 10M; partitions 2 vs 1
    python benchmarks/scale.py --smoke       # 10k and 100k rows

- ``scale_memory``: the peak resident memory of the driver and the engine's actors over a :mod:`relay` run (agents
  doing no I/O, 2 hops a task) of 10,000,000 rows of ``.jsonl.zst`` against one of 1,000,000 (goal: <= 1.1x).
- ``scale_resume``: 1,000 rows appended to the 10M input as a new zstd frame (an input that grew at its end, which
  ``--resume`` accepts); the resume is timed from its call to the first new record written (goal: <= 30 s, which
  includes reading the 10M finished ids and passing the 10M finished rows), and to its end.
- ``scale_partitions``: a relay run whose collector is the bottleneck (web-page-sized rows of about 16 KB to read,
  parse and keep, 1 hop) at ``run.partitions`` 2 against 1, side by side in each repeat (goal: >= 1.3x on 2 cores).
  Partitions share out the collector's work only (reading, parsing, admission, completion), not the agents' or the
  writer's: with 4 KB rows (``--row-kb 4``) those take a larger share and the gain is smaller (1.24x here).

The naturalreasoning goal (20 partitions vs 1, >= 0.95x) is :mod:`naturalreasoning_partitions`' result.
Each run is one full ``matrix_core.run`` as a user makes it: no knob but the workload's own (``relay.hops``) and
the one compared (``run.partitions``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import engine_runs
import psutil
import zstandard
from memory import actors_rss, sampled
from results import Result, Spread, add_common_flags, write

import matrix_core

HERE = Path(__file__).parent
FRAME_ROWS = 100_000
"""Rows per zstd frame of the generated input."""


def write_zst(path: Path, first: int, count: int) -> Path:
    """Append ``count`` rows (ids ``first`` on) to ``path`` as zstd frames of :data:`FRAME_ROWS` rows."""
    compressor = zstandard.ZstdCompressor(level=3)
    with path.open("ab") as file:
        for start in range(first, first + count, FRAME_ROWS):
            stop = min(start + FRAME_ROWS, first + count)
            text = "".join(
                f'{{"id": "row-{index:010d}", "text": "document {index}"}}\n' for index in range(start, stop)
            )
            file.write(compressor.compress(text.encode()))
    return path


def big_rows(path: Path, count: int, size: int) -> Path:
    """``count`` rows of about ``size`` bytes each: parsing them is the collector's work."""
    words = " ".join(f"w{index % 97}" for index in range(size // 4))
    with path.open("w") as file:
        for index in range(count):
            file.write(
                json.dumps({"id": f"doc-{index}", "text": words, "meta": {"n": index, "tags": ["a", "b"]}}) + "\n"
            )
    return path


def driver_and_actors_rss() -> int:
    """Resident bytes of this process (the driver) and the engine's actors."""
    return psutil.Process().memory_info().rss + actors_rss()


def relay_overrides(source: Path, output: Path, hops: int, *more: str) -> list[str]:
    return [
        f"input.path={source}",
        f"output.path={output}",
        "backend.type=relay.none",
        f"relay.hops={hops}",
        "run.quiet=true",
        *more,
    ]


def memory_run(source: Path, output: Path) -> tuple[float, float]:
    """Peak MB of driver plus actors over a relay run of ``source``, and its tasks/s."""
    with sampled(output, 0.25, driver_and_actors_rss) as samples:
        metrics = engine_runs.run("relay", relay_overrides(source, output, 2))
    return max(rss for _, rss in samples) / 2**20, metrics.tasks / metrics.engine.flow_time_s


def first_record_after(output: Path, resume: threading.Thread) -> float:
    """Seconds from now until ``output`` grows (the first new record), while ``resume`` runs."""
    started, size = time.monotonic(), output.stat().st_size
    while output.stat().st_size == size:
        if not resume.is_alive():
            raise RuntimeError("the resume ended without writing a record")
        time.sleep(0.02)
    return time.monotonic() - started


def resume_run(source: Path, output: Path, rows: int, added: int) -> tuple[float, float]:
    """Append ``added`` rows to ``source`` and resume; seconds to the first new record and to the end."""
    write_zst(source, rows, added)
    outcome: dict[str, object] = {}

    def resume() -> None:
        try:
            outcome["metrics"] = matrix_core.run("relay", overrides=relay_overrides(source, output, 2), resume=True)
        except BaseException as error:  # the main thread reports it
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=resume)
    thread.start()
    first = first_record_after(output, thread)
    thread.join()
    if "error" in outcome:
        raise RuntimeError(f"the resume failed: {outcome['error']}")
    metrics = outcome["metrics"]
    assert isinstance(metrics, matrix_core.RunMetrics)
    if metrics.status != {"success": added} or metrics.engine.skipped_finished != rows:
        raise RuntimeError(f"the resume ran {metrics.status}, skipped {metrics.engine.skipped_finished}")
    return first, time.monotonic() - started


def partitions_rate(source: Path, workdir: Path, partitions: int) -> float:
    output = workdir / f"p{partitions}-{time.monotonic_ns()}.jsonl"
    metrics = engine_runs.run("relay", relay_overrides(source, output, 1, f"run.partitions={partitions}"))
    return metrics.tasks / metrics.engine.flow_time_s


def memory_and_resume(work: Path, small: int, large: int, added: int) -> list[Result]:
    """The memory runs at ``small`` and ``large`` rows, then the resume of the large one."""
    peaks, rates = {}, {}
    for rows in (small, large):
        source = write_zst(work / f"rows-{rows}.jsonl.zst", 0, rows)
        peaks[rows], rates[rows] = memory_run(source, work / f"out-{rows}.jsonl")
        print(f"{rows:,} rows: peak {peaks[rows]:,.0f} MB, {rates[rows]:,.0f} tasks/s", flush=True)
    first_s, resume_s = resume_run(work / f"rows-{large}.jsonl.zst", work / f"out-{large}.jsonl", large, added)
    print(f"resume: first new record after {first_s:.1f} s, done after {resume_s:.1f} s", flush=True)
    return [
        Result(
            name="scale_memory",
            metric="peak_mb",
            params={"rows": large, "format": "jsonl.zst", "hops": 2},
            ours=Spread.of([peaks[large]]),
            baselines={f"rows_{small}": Spread.of([peaks[small]])},
            ratios={f"rows_{small}": Spread.of([peaks[large] / peaks[small]])},
            goal="<= 1.1x",
            goal_value=1.1,
            goal_on=(f"rows_{small}",),
            notes=f"tasks/s {rates[small]:,.0f} at {small:,} rows, {rates[large]:,.0f} at {large:,}",
        ),
        Result(
            name="scale_resume",
            metric="s_to_first_new_record",
            params={"finished": large, "added": added, "format": "jsonl.zst"},
            ours=Spread.of([first_s]),
            baselines={"whole_resume_s": Spread.of([resume_s])},
            goal="<= 30 s",
            goal_value=30,
            goal_on=("ours",),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--small", type=int, default=1_000_000, help="rows of the smaller memory run")
    parser.add_argument("--large", type=int, default=10_000_000, help="rows of the larger memory run and resume")
    parser.add_argument("--added", type=int, default=1_000, help="rows appended before the resume")
    parser.add_argument("--big-rows", type=int, default=100_000, help="rows in the partitions runs")
    parser.add_argument("--row-kb", type=int, default=16, help="KB of each row in the partitions runs")
    parser.add_argument("--only-partitions", action="store_true", help="skip the memory and resume runs")
    parser.add_argument("--workdir", type=Path, help="where inputs and outputs go (default: a temporary directory)")
    args = parser.parse_args()
    if args.smoke:
        args.small, args.large, args.added, args.big_rows, args.repeats = 10_000, 100_000, 100, 5_000, 1

    import relay

    from matrix_core.testing import local_ray, register_plugin

    results = []
    with (
        local_ray([str(HERE)]),
        register_plugin(relay, name="relay"),
        tempfile.TemporaryDirectory(dir=args.workdir) as workdir,
    ):
        work = Path(workdir)
        if not args.only_partitions:
            results += memory_and_resume(work, args.small, args.large, args.added)
        source = big_rows(work / "big.jsonl", args.big_rows, args.row_kb * 1024)
        by_partitions: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for partitions in by_partitions:
                by_partitions[partitions].append(partitions_rate(source, work, partitions))
    results.append(
        Result(
            name="scale_partitions",
            metric="tasks_per_s",
            params={"rows": args.big_rows, "row_kb": args.row_kb, "hops": 1, "partitions": 2},
            ours=Spread.of(by_partitions[2]),
            baselines={"p1": Spread.of(by_partitions[1])},
            ratios={"p1": Spread.of([two / one for two, one in zip(by_partitions[2], by_partitions[1], strict=True)])},
            goal=">= 1.3x",
            goal_value=1.3,
            goal_on=("p1",),
        )
    )
    write(f"scale{args.suffix}", results, args.out, args.smoke)


if __name__ == "__main__":
    main()
