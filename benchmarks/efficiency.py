"""Benchmark 1, efficiency: ``matrix run inference`` against the ideal client, same requests, same concurrency, same
simulated GPU (goal: steady-state requests/s ratio >= 0.95).

    python benchmarks/efficiency.py                  # 6,000 requests, 500 in flight, about 2 s each, 3 repeats
    python benchmarks/efficiency.py --smoke          # a few seconds

Steady state: the rate between the 10th and the 90th percentile of completion times, read from the simulated GPU's
own clock, so neither Ray's start-up nor the last stragglers count. Each repeat runs the ideal client and then the
engine; the ratio of each repeat is taken side by side and the median reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import ideal_client
from results import Result, Spread, add_common_flags, write
from simulated_gpu import GpuConfig, Meter, serve_in_process

DECODE_TPS = 50.0


def steady_rate(times: list[float]) -> float:
    """Completions per second between the 10th and 90th percentile completion."""
    times = sorted(times)
    first, last = len(times) // 10, (len(times) * 9) // 10
    return (last - first) / (times[last] - times[first])


def measured(base_url: str, run: Callable[[], None], expected: int) -> float:
    """Steady-state requests/s of the completions ``run`` caused."""
    with Meter(base_url) as meter:
        run()
    if meter.completed != expected:
        raise RuntimeError(f"expected {expected} completions, the simulated GPU saw {meter.completed}")
    return steady_rate(meter.completion_times)


def run_engine(base_url: str, prompts: Path, output: Path, concurrency: int, replicas: int | None) -> None:
    """``matrix run inference`` as a user runs it, in its own process: the input, the output, the server and the
    concurrency, nothing else (``replicas`` only when ``--replicas`` asks for an experiment with more actors)."""
    command = [
        sys.executable,
        "-m",
        "matrix_core",
        "run",
        "inference",
        "-i",
        str(prompts),
        "-o",
        str(output),
        "-q",
        f"backend.base_url={base_url}",
        f"run.max_concurrency={concurrency}",
    ]
    if replicas is not None:
        command.append(f"agents.model.replicas={replicas}")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"matrix run inference failed ({done.returncode}): {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--requests", type=int, default=6_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=2.0, help="mean time of one request")
    parser.add_argument("--replicas", type=int, help="actors serving the model role (default: unset, what a user gets)")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.concurrency, args.seconds, args.repeats = 100, 20, 0.2, 1

    gpu = GpuConfig(
        slots=args.concurrency, decode_tps=DECODE_TPS, mean_output_tokens=args.seconds * DECODE_TPS, sigma=0.3
    )
    bodies = [{"messages": [{"role": "user", "content": f"prompt {i}: say something"}]} for i in range(args.requests)]
    ideal, ours, ratios = [], [], []
    with serve_in_process(gpu) as base_url, tempfile.TemporaryDirectory() as workdir:
        prompts = Path(workdir) / "prompts.jsonl"
        prompts.write_text(
            "".join(json.dumps({"id": i, "text": b["messages"][0]["content"]}) + "\n" for i, b in enumerate(bodies))
        )
        for repeat in range(args.repeats):
            ideal.append(
                measured(
                    base_url, lambda: asyncio.run(ideal_client.run(base_url, bodies, args.concurrency)), len(bodies)
                )
            )
            output = Path(workdir) / f"out-{repeat}.jsonl"
            ours.append(
                measured(
                    base_url,
                    lambda: run_engine(base_url, prompts, output, args.concurrency, args.replicas),  # noqa: B023
                    len(bodies),
                )
            )
            ratios.append(ours[-1] / ideal[-1])
    capacity = args.concurrency / args.seconds
    result = Result(
        name="efficiency",
        metric="requests_per_s",
        params={"requests": args.requests, "in_flight": args.concurrency, "mean_request_s": args.seconds},
        ours=Spread.of(ours),
        baselines={"ideal_client": Spread.of(ideal)},
        ratios={"ideal_client": Spread.of(ratios)},
        goal=">= 0.95",
        goal_value=0.95,
        goal_on=("ideal_client",),
        notes=f"the simulated GPU's limit at this concurrency is about {capacity:.0f} requests/s",
    )
    write(f"efficiency{args.suffix}", [result], args.out, args.smoke, gpu=gpu.__dict__)


if __name__ == "__main__":
    main()
