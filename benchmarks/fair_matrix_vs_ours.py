"""Benchmark 4, fair-matrix 0.2.6 (the reference) against ours: each one's own peer-to-peer Collaborative Reasoner
pipeline, the same questions, the same simulated GPU scripted by :mod:`coral_script` (so both hold conversations of
the same lengths), tasks/s at several numbers of tasks in flight (goal: >= 2x).

    benchmarks/setup_fair_matrix.sh                      # once: fair-matrix in benchmarks/.venv-fair-matrix
    python benchmarks/fair_matrix_vs_ours.py             # 1,000 and 5,000 in flight
    python benchmarks/fair_matrix_vs_ours.py --smoke

fair-matrix runs in its own virtual environment (:mod:`fair_matrix_coral`), ours with ``matrix run coral``, each in
its own process with its own Ray; tasks/s is read on the simulated GPU's clock (first request to last answer), so
neither one's start-up counts. Without fair-matrix's environment the benchmark says so and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from results import Result, Spread, add_common_flags, write
from simulated_gpu import GpuConfig, Meter, serve_in_process

HERE = Path(__file__).parent
FAIR_MATRIX_PYTHON = HERE / ".venv-fair-matrix" / "bin" / "python"
QUESTIONS = HERE.parent / "plugins" / "matrix-coral" / "matrix_coral" / "data" / "mmlu_sample.jsonl"


def questions(count: int) -> list[dict[str, Any]]:
    """``count`` MMLU-Pro-layout rows: the coral plugin's bundled questions, numbered variants of each so that every
    row is a distinct question (and gets its own conversation length); the gold answer is (A)."""
    sample = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
    rows = []
    for index in range(count):
        row = dict(sample[index % len(sample)])
        row.update(question_id=index, question=f"{row['question']} (variant {index})", answer="A", answer_index=0)
        rows.append(row)
    return rows


def _run(command: list[str], what: str) -> str:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE)
    if done.returncode:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout


def run_ours(base_url: str, rows: Path, output: Path, concurrency: int) -> dict[str, Any]:
    """``matrix run coral`` with the paper's settings (20 turns, 1,024 tokens a turn); returns its metrics."""
    _run(
        [
            sys.executable,
            "-m",
            "matrix_core",
            "run",
            "coral",
            "-i",
            str(rows),
            "-o",
            str(output),
            "-q",
            "backend.type=openai",
            f"backend.base_url={base_url}",
            "coral.max_turns=20",
            "coral.sampling.max_tokens=1024",
            f"run.max_concurrency={concurrency}",
        ],
        "matrix run coral",
    )
    return json.loads(output.with_suffix(".metrics.json").read_text())


def run_fair_matrix(base_url: str, rows: Path, output: Path, concurrency: int) -> dict[str, Any]:
    """fair-matrix's own pipeline (:mod:`fair_matrix_coral`); returns its summary line."""
    stdout = _run(
        [
            str(FAIR_MATRIX_PYTHON),
            str(HERE / "fair_matrix_coral.py"),
            f"--base-url={base_url}",
            f"--data={rows}",
            f"--concurrency={concurrency}",
            f"--output={output}",
        ],
        "fair-matrix",
    )
    return json.loads(stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--tasks", type=int, default=0, help="questions per run; default: the concurrency")
    parser.add_argument("--slots", type=int, default=1_024)
    parser.add_argument("--decode-tps", type=float, default=200.0)
    args = parser.parse_args()
    if args.smoke:
        args.concurrency, args.tasks, args.repeats, args.slots = [10], 20, 1, 64
    if not FAIR_MATRIX_PYTHON.exists():
        print(f"fair_matrix_vs_ours SKIPPED: no fair-matrix environment at {FAIR_MATRIX_PYTHON.parent.parent}")
        print("  run benchmarks/setup_fair_matrix.sh first")
        return

    gpu = GpuConfig(
        slots=args.slots, decode_tps=args.decode_tps, mean_output_tokens=100, sigma=1.0, reply="coral_script:reply"
    )
    results = []
    with serve_in_process(gpu) as base_url, tempfile.TemporaryDirectory() as workdir:
        for concurrency in args.concurrency:
            rows = questions(args.tasks or concurrency)
            rows_path = Path(workdir) / f"questions-{concurrency}.jsonl"
            rows_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            rates: dict[str, list[float]] = {"ours": [], "fair_matrix": []}
            details: dict[str, Any] = {}
            for repeat in range(args.repeats):
                for name, run in (("ours", run_ours), ("fair_matrix", run_fair_matrix)):
                    output = Path(workdir) / f"{name}-{concurrency}-{repeat}.jsonl"
                    with Meter(base_url) as meter:
                        summary = run(base_url, rows_path, output, concurrency)
                    finished = sum(1 for _ in output.open())
                    if finished != len(rows):
                        raise RuntimeError(f"{name} finished {finished} of {len(rows)} tasks")
                    rates[name].append(finished / meter.seconds)
                    details[name] = {"requests": meter.completed, "completion_tokens": meter.completion_tokens}
                    details[name]["agreement"] = (
                        summary["workflow"]["agreement"] if name == "ours" else summary["metrics"]["agreement"]
                    )
            ours = rates["ours"]
            results.append(
                Result(
                    name="fair_matrix_vs_ours",
                    metric="tasks_per_s",
                    params={"in_flight": concurrency, "tasks": len(rows)},
                    ours=Spread.of(ours),
                    baselines={"fair_matrix": Spread.of(rates["fair_matrix"])},
                    ratios={"fair_matrix": Spread.of([o / f for o, f in zip(ours, rates["fair_matrix"], strict=True)])},
                    goal=">= 2x",
                    goal_value=2.0,
                    goal_on=("fair_matrix",),
                    notes=f"work on the simulated GPU in the last repeat: {json.dumps(details)}",
                )
            )
    write(f"fair_matrix_vs_ours{args.suffix}", results, args.out, args.smoke, gpu=gpu.__dict__)


if __name__ == "__main__":
    main()
