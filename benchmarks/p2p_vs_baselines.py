"""Benchmark 3, peer to peer against a central controller and a batch-barrier pipeline, on the Coral-like :mod:`duet`
workload (two agents alternating up to 20 turns, heterogeneous output lengths) against one simulated GPU; output
tokens/s at several numbers of concurrent conversations (goal: >= 2x over each baseline).

    python benchmarks/p2p_vs_baselines.py                 # 1,000 and 5,000 conversations in flight, 3 repeats
    python benchmarks/p2p_vs_baselines.py --smoke

Each repeat runs the three orchestrations one after the other over the same conversations (the same requests, so
the same work: the simulated GPU's completion counts are checked equal) and takes their ratios side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import baselines
import duet
import engine_runs
from results import Result, Spread, add_common_flags, write
from simulated_gpu import GpuConfig, Meter, serve_in_process

HERE = Path(__file__).parent
MAX_TOKENS = 1024


def run_engine(base_url: str, rows_path: Path, concurrency: int, replicas: int | None, workdir: Path) -> None:
    """One engine run of the duet workflow, set as a user sets it (``replicas`` only when ``--replicas`` asks)."""
    overrides = [
        f"input.path={rows_path}",
        f"output.path={workdir / f'duet-{concurrency}-{os.urandom(4).hex()}.jsonl'}",
        "backend.type=openai",
        f"backend.base_url={base_url}",
        f"duet.max_tokens={MAX_TOKENS}",  # the baselines' max_tokens: the same requests
        f"run.max_concurrency={concurrency}",
        "run.quiet=true",
    ]
    if replicas is not None:
        overrides += [f"agents.{side}.replicas={replicas}" for side in duet.SIDES]
    engine_runs.run("duet", overrides)


def run_baseline(drive: Callable[..., Any], base_url: str, rows: list[dict[str, Any]], concurrency: int) -> None:
    """One baseline run."""
    asyncio.run(drive(base_url, rows, concurrency, MAX_TOKENS))


def measure(base_url: str, run: Callable[[], None]) -> tuple[float, tuple[int, int]]:
    """Output tokens/s of one run on the simulated GPU's clock, and the work it saw (requests, tokens)."""
    with Meter(base_url) as meter:
        run()
    return meter.rate("completion_tokens"), (meter.completed, meter.completion_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--conversations", type=int, default=0, help="per run; default: the concurrency (one wave)")
    parser.add_argument("--slots", type=int, default=1_024, help="the simulated GPU's decode slots")
    parser.add_argument("--decode-tps", type=float, default=200.0, help="per sequence")
    parser.add_argument("--mean-output-tokens", type=float, default=100.0)
    parser.add_argument("--replicas", type=int, help="engine actors per role (default: unset, what a user gets)")
    args = parser.parse_args()
    if args.smoke:
        args.concurrency, args.conversations, args.repeats, args.slots = [20], 40, 1, 64

    from matrix_core.testing import local_ray, register_plugin

    gpu = GpuConfig(slots=args.slots, decode_tps=args.decode_tps, mean_output_tokens=args.mean_output_tokens, sigma=1.0)
    results = []
    with (
        local_ray([str(HERE)]),
        serve_in_process(gpu) as base_url,
        register_plugin(duet, name="duet"),
        tempfile.TemporaryDirectory() as workdir,
    ):
        for concurrency in args.concurrency:
            rows = duet.conversations(args.conversations or concurrency)
            rows_path = Path(workdir) / f"rows-{concurrency}.jsonl"
            rows_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            rates: dict[str, list[float]] = {"p2p": [], "central_controller": [], "batch_barrier": []}
            for _ in range(args.repeats):
                runs = {
                    "p2p": partial(run_engine, base_url, rows_path, concurrency, args.replicas, Path(workdir)),
                    "central_controller": partial(
                        run_baseline, baselines.central_controller, base_url, rows, concurrency
                    ),
                    "batch_barrier": partial(run_baseline, baselines.batch_barrier, base_url, rows, concurrency),
                }
                works = []
                for name, run in runs.items():
                    rate, work = measure(base_url, run)
                    rates[name].append(rate)
                    works.append(work)
                if any(work != works[0] for work in works):
                    raise RuntimeError(f"the orchestrations did different work: {works}")
            ours = rates.pop("p2p")
            results.append(
                Result(
                    name="p2p_vs_baselines",
                    metric="output_tokens_per_s",
                    params={
                        "in_flight": concurrency,
                        "conversations": len(rows),
                        "requests": works[0][0],
                    },
                    ours=Spread.of(ours),
                    baselines={name: Spread.of(values) for name, values in rates.items()},
                    ratios={
                        name: Spread.of([o / b for o, b in zip(ours, values, strict=True)])
                        for name, values in rates.items()
                    },
                    goal=">= 2x over each",
                    goal_value=2.0,
                    goal_on=("central_controller", "batch_barrier"),
                )
            )
    write(f"p2p_vs_baselines{args.suffix}", results, args.out, args.smoke, gpu=gpu.__dict__, replicas=args.replicas)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
