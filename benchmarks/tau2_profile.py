"""Where `matrix run tau2`'s CPU goes: the same run as ``tau2_vs_runner.py`` (the simulated server, solved retail
tasks), its processes' CPU read from the OS and their Python stacks sampled with ``py-spy record --subprocesses``.

    python benchmarks/tau2_profile.py --tasks 64 --concurrency 64

prints, per kind of process (each agent role's actors, the collector, the writer, the driver, Ray's own processes,
the simulated server), its CPU milliseconds per task while tasks flow (user + system time of its processes, from
``psutil``, from the run's first timeline line to its end: the actors' start-up left out, as the benchmark's rates
leave it out) and the functions where its Python samples were taken (self time, as shares of the kind's samples;
waiting in Ray's event loop is left out, as it is no work). py-spy's own CPU is not counted, but it slows the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent
KINDS = [  # a frame (by name) among a process's samples that names its kind
    ("tool", "ToolExecutor.step"),
    ("reward", "Reward.step"),
    ("user", "UserSimulator.view"),
    ("assistant", "Assistant.view"),
    ("collector", "Collector.admit_all"),
    ("writer", "Writer.write"),
    ("driver", "run_workflow"),
]
IDLE = ("Worker.main_loop", "EpollSelector.select", "_PollLikeSelector.select", "Event.wait", "Condition.wait")
"""Leaf frames that are a process waiting, not working."""
PROCESS = re.compile(r'^process (\d+):"(.*)"$')


def watch_cpu(root: int, seen: dict[int, tuple[str, float]], stop: threading.Event) -> None:
    """Until ``stop``: every half second, each process under ``root`` and the CPU seconds it used so far."""
    while not stop.is_set():
        try:
            processes = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                times = process.cpu_times()
                seen[process.pid] = (" ".join(process.cmdline())[:100], times.user + times.system)
            except psutil.Error:
                continue
        stop.wait(0.5)


def stacks(raw: Path) -> tuple[dict[int, Counter[str]], dict[int, Counter[str]]]:
    """Per process: every frame's samples (inclusive), and each leaf frame's (self)."""
    frames: dict[int, Counter[str]] = defaultdict(Counter)
    leaves: dict[int, Counter[str]] = defaultdict(Counter)
    for text in raw.read_text(errors="replace").splitlines():
        body, _, count = text.rpartition(" ")
        parts = body.split(";")
        nested = [index for index, part in enumerate(parts) if PROCESS.match(part)]  # ROOT;CHILD;...;frames
        if not nested or not count.isdigit():
            continue
        pid = int(PROCESS.match(parts[nested[-1]]).group(1))
        own = parts[nested[-1] + 1 :]
        frames[pid].update({frame.split(" (")[0]: int(count) for frame in own})
        if own:
            name, _, where = own[-1].partition(" (")
            leaves[pid][f"{name} ({where.rsplit('/', 1)[-1]}"] += int(count)
    return frames, leaves


def kind_of(command: str, frames: Counter[str]) -> str:
    """The kind of a process, from the frames its samples hold (Ray names every actor's process alike)."""
    for kind, marker in KINDS:
        if any(marker in frame for frame in frames):
            return kind
    return "ray" if "ray" in command else "other"


def summarize(
    cpu: dict[int, tuple[str, float]], at_start: dict[int, tuple[str, float]], raw: Path, tasks: int, top: int
) -> dict[str, object]:
    """CPU ms per task of each process kind from ``at_start`` on, and where its samples were taken."""
    frames, leaves = stacks(raw)
    by_kind: Counter[str] = Counter()
    work: dict[str, Counter[str]] = defaultdict(Counter)
    for pid, (command, seconds) in cpu.items():
        kind = "server" if command == "server" else kind_of(command, frames.get(pid, Counter()))
        if command.startswith("py-spy"):
            continue
        by_kind[kind] += seconds - at_start.get(pid, ("", 0.0))[1]
        work[kind].update({leaf: n for leaf, n in leaves.get(pid, Counter()).items() if not leaf.startswith(IDLE)})
    shares = {}
    for kind, counted in work.items():
        total = sum(counted.values()) or 1
        shares[kind] = {leaf: f"{100 * n / total:.1f}%" for leaf, n in counted.most_common(top)}
    return {
        "cpu_ms_per_task": {kind: round(1000 * s / tasks, 1) for kind, s in by_kind.most_common()},
        "total_cpu_ms_per_task": round(1000 * sum(by_kind.values()) / tasks, 1),
        "where_python_samples_were": shares,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="retail")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=int, default=10, help="py-spy samples per second (more slow the run)")
    parser.add_argument("--top", type=int, default=12, help="functions shown per process kind")
    parser.add_argument("--out", type=Path, help="write the summary (JSON) here too")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from tau2_vs_runner import tasks_with_unique_scenarios

    task_ids = tasks_with_unique_scenarios(args.domain, args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = work / "rows.jsonl"
        rows.write_text("".join(json.dumps({"id": t, "domain": args.domain, "task_id": t}) + "\n" for t in task_ids))
        port_file, raw = work / "server", work / "raw.txt"
        serve = [sys.executable, str(HERE / "tau2_vs_runner.py"), "--domain", args.domain, "--latency"]
        server = subprocess.Popen([*serve, str(args.latency), "--serve", str(port_file)])
        cpu: dict[int, tuple[str, float]] = {}
        stop = threading.Event()
        try:
            while not port_file.exists():
                time.sleep(0.2)
            command = [sys.executable, "-m", "matrix_core", "run", "tau2", "-i", str(rows), "-o", str(work / "o.jsonl")]
            command += ["-q", "backend.type=openai", f"backend.base_url={port_file.read_text()}"]
            command += [f"run.max_concurrency={args.concurrency}", "tau2.max_steps=200"]
            command += ["tau2.sampling.max_tokens=null"]
            spy = ["py-spy", "record", "--subprocesses", "--nonblocking", "--format", "raw", "--rate", str(args.rate)]
            spied = subprocess.Popen([*spy, "-o", str(raw), "--", *command], stdout=subprocess.DEVNULL)
            watcher = threading.Thread(target=watch_cpu, args=(spied.pid, cpu, stop))
            watcher.start()
            while not (work / "o.timeline.jsonl").exists() and spied.poll() is None:  # tasks start flowing
                time.sleep(0.1)
            at_start = dict(cpu)
            server_start = psutil.Process(server.pid).cpu_times()
            if spied.wait():
                raise SystemExit("the run failed")
            after = psutil.Process(server.pid).cpu_times()
            cpu[server.pid] = ("server", after.user + after.system - server_start.user - server_start.system)
            metrics = json.loads((work / "o.metrics.json").read_text())
        finally:
            stop.set()
            server.kill()
        summary = summarize(cpu, at_start, raw, args.tasks, args.top)
    summary["tasks_per_s"] = round(args.tasks / metrics["flow_time_s"], 2)
    summary["status"] = metrics["status"]
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
