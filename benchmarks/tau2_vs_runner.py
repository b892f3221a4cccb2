"""tau2 tasks/s: matrix-tau2 against tau2's own threaded runner, on the same simulated server and task set.

The server (the project's FakeOpenAIServer in a process of its own, with a fixed latency per request) plays both
sides of every conversation: the user asks, the assistant makes the task's gold tool calls one per turn and says
what the task expects, the user stops. So every simulation is a solved task (reward 1.0) of the same length on
both sides, and the comparison measures the runners, not a model.

    python benchmarks/tau2_vs_runner.py --domain retail --tasks 24 --latency 0.5 --concurrency 8,32

prints, per concurrency, tau2's runner (``tau2.run.run_tasks``, threads, ``max_concurrency``) and Matrix (``matrix run
tau2``, the same tasks) side by side: tasks/s, tokens/s and mean reward. Both rates are over the simulations only:
tau2's from its ``run_tasks`` call, Matrix's ``flow_time_s`` (from the first admission, after the actors started).
The CPU-bound ceiling to compare them with comes from ``benchmarks/tau2_cpu.py`` (cores / CPU seconds per task,
measured on every core at once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results import Result, Spread, add_common_flags, write

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def gold_reply(body: dict[str, Any]) -> str | list[dict[str, Any]]:
    """Both sides of a solved conversation (see the module docstring)."""
    from matrix_tau2 import catalog

    messages = body["messages"]
    system = messages[0]["content"]
    if system.startswith("<instructions>"):
        opening = next(m["content"] for m in messages if m["role"] == "user" and m["content"].startswith("task:"))
        _, domain, task_id = opening.split(":", 2)
        criteria = catalog.task(domain, task_id).evaluation_criteria
        todo = [step for step in criteria.actions or [] if step.requestor == "assistant"]
        done = sum(1 for m in messages if m["role"] == "tool")
        if done < len(todo):
            return [{"name": todo[done].name, "arguments": todo[done].arguments}]
        return " ".join(["All set.", *(criteria.communicate_info or [])])
    domain, task_id = _scenario_index()[next(s for s in _scenario_index() if s in system)]
    if any(m["role"] == "assistant" and (m.get("content") or "").startswith("task:") for m in messages):
        return "Thank you. ###STOP###" if "All set." in (messages[-1].get("content") or "") else "Go on."
    return f"task:{domain}:{task_id}"


_SCENARIOS: dict[str, tuple[str, str]] = {}


def _scenario_index() -> dict[str, tuple[str, str]]:
    if not _SCENARIOS:
        from matrix_tau2 import catalog

        domain = os.environ["TAU2_BENCH_DOMAIN"]
        for task_id, task in catalog._tasks(domain, None).items():
            _SCENARIOS.setdefault(str(task.user_scenario), (domain, task_id))
    return _SCENARIOS


def serve(latency: float, port_file: Path) -> None:
    """Run the simulated server until killed; write its base URL to ``port_file``."""
    from matrix_core.testing import FakeOpenAIServer

    with FakeOpenAIServer(latency_s=latency, reply=gold_reply, record=False).in_thread() as server:
        port_file.write_text(server.base_url)
        while True:
            time.sleep(3600)


def tasks_with_unique_scenarios(domain: str, count: int) -> list[str]:
    from matrix_tau2 import catalog

    seen, ids = set(), []
    for task_id, task in catalog._tasks(domain, None).items():
        scenario = str(task.user_scenario)
        if scenario not in seen and task.evaluation_criteria and task.evaluation_criteria.actions:
            seen.add(scenario)
            ids.append(task_id)
    return ids[:count]


TAU2_RUNNERS = {"tau2": "tau2_runner", "tau2-gc": "tau2_runner_gc_tuned"}
"""tau2's runner as shipped, and under Matrix's garbage-collector settings (the same process otherwise)."""


def run_tau2(domain: str, task_ids: list[str], base_url: str, concurrency: int, out: Path, gc_tuned: bool) -> None:
    """tau2's own runner, in this process (called in a child process by :func:`main`); with ``gc_tuned``, under the
    garbage-collector settings Matrix's actors use (``run.gc_threshold``, :mod:`matrix_core.engine.gc_settings`)."""
    from loguru import logger

    logger.disable("tau2")
    from matrix_tau2 import catalog
    from tau2.run import run_tasks
    from tau2.utils.llm_utils import get_token_usage

    from matrix_core.config import RunConfig
    from matrix_core.engine import gc_settings

    tasks = [catalog.task(domain, task_id) for task_id in task_ids]
    if gc_tuned:
        catalog.domain_info(domain)  # loaded before the freeze, as in the actors
        gc_settings.settle(RunConfig().gc_threshold)
    args = {"api_base": base_url, "api_key": "EMPTY", "temperature": 0.0}
    started = time.monotonic()
    results = run_tasks(
        domain,
        tasks,
        "llm_agent",
        "user_simulator",
        llm_agent="openai/fake-model",
        llm_args_agent=dict(args),
        llm_user="openai/fake-model",
        llm_args_user=dict(args),
        max_steps=200,
        max_concurrency=concurrency,
        console_display=False,
        log_level="ERROR",
    )
    wall = time.monotonic() - started
    rewards = [s.reward_info.reward for s in results.simulations]
    tokens = sum(sum(get_token_usage(s.messages).values()) for s in results.simulations)
    out.write_text(
        json.dumps({"wall_s": wall, "tasks": len(rewards), "reward": sum(rewards) / len(rewards), "tokens": tokens})
    )


def measure_cpu(domain: str, task_ids: list[str], out: Path) -> None:
    """CPU seconds per task (:mod:`tau2_cpu`, in this process): tau2's own scoring under the default garbage
    collector, then matrix-tau2's with one trial (its reward agent computes each task's gold side once, so a task
    run once pays it in full) under the settings its actors use."""
    from matrix_tau2 import catalog
    from tau2_cpu import measure

    from matrix_core.config import RunConfig
    from matrix_core.engine import gc_settings

    def per_task(scoring: tuple[str, ...]) -> float:
        rows = [measure(domain, task_id) for task_id in task_ids]
        parts = ("env_build", "tool_calls", "views", *scoring)
        return statistics.mean(sum(row[part] for part in parts) for row in rows)

    catalog.domain_info(domain)
    tau2 = per_task(("score_tau2",))
    gc_settings.settle(RunConfig().gc_threshold)
    out.write_text(json.dumps({"tau2": tau2, "matrix": per_task(("predicted_state", "score_first"))}))


def measure_cpu_on_every_core(own: list[str], task_ids: list[str], cores: int, work: Path) -> dict[str, float]:
    """CPU seconds per task with every core busy: one :func:`measure_cpu` child per core at once, averaged. Cores
    that share hardware run slower when all are busy (on this project's machine a CPU-bound loop takes 2.3x the CPU
    seconds with the other core busy), so a task's CPU measured alone would overstate what all the cores deliver."""
    outs = [work / f"cpu-{core}.json" for core in range(cores)]
    children = [subprocess.Popen([*own, "--cpu-child", ",".join(task_ids), str(out)]) for out in outs]
    if any(child.wait() for child in children):
        raise SystemExit("measuring the CPU per task failed")
    measured = [json.loads(out.read_text()) for out in outs]
    return {name: statistics.mean(one[name] for one in measured) for name in measured[0]}


class Bench:
    """The simulated server and the task set, and one run of either runner on a number of cores."""

    def __init__(self, domain: str, task_ids: list[str], base_url: str, work: Path) -> None:
        self.domain, self.task_ids, self.base_url, self.work = domain, task_ids, base_url, work
        self.own = [sys.executable, __file__, "--domain", domain]
        self.rows = work / "rows.jsonl"
        self.rows.write_text("".join(json.dumps({"id": t, "domain": domain, "task_id": t}) + "\n" for t in task_ids))
        self.runs = 0

    def run(self, runner: str, concurrency: int, cores: int) -> dict[str, float]:
        """Tasks/s, tokens/s and mean reward of one run, its processes (Ray's included) held to ``cores`` cores."""
        self.runs += 1
        out = self.work / f"{runner}-{self.runs}"
        if runner in TAU2_RUNNERS:
            child = ["--tau2-child", self.base_url, str(concurrency), ",".join(self.task_ids), f"{out}.json"]
            child.append("gc-tuned" if runner == "tau2-gc" else "default")
            _pinned([*self.own, *child], cores)
            result = json.loads(Path(f"{out}.json").read_text())
            wall, tokens, reward = result["wall_s"], result["tokens"], result["reward"]
        else:
            command = [sys.executable, "-m", "matrix_core", "run", "tau2", "-i", str(self.rows), "-o", f"{out}.jsonl"]
            command += ["-q", "backend.type=openai"]
            command += [f"backend.base_url={self.base_url}", f"run.max_concurrency={concurrency}"]
            command += ["tau2.max_steps=200", "tau2.sampling.max_tokens=null"]
            _pinned(command, cores)
            metrics = json.loads(Path(f"{out}.metrics.json").read_text())
            finished = metrics["status"].get("success", 0)
            if finished != len(self.task_ids):
                raise RuntimeError(f"matrix finished {finished} of {len(self.task_ids)} tasks: {metrics['status']}")
            wall, tokens = metrics["flow_time_s"], metrics["tokens_in"] + metrics["tokens_out"]
            reward = metrics["workflow"]["reward"]
        if reward != 1.0:
            raise RuntimeError(f"{runner} scored {reward} where every task is solved: the runners disagree")
        return {"tasks_per_s": len(self.task_ids) / wall, "tokens_per_s": tokens / wall}


def _pinned(command: list[str], cores: int) -> None:
    """Run ``command`` on the first ``cores`` cores (children inherit the affinity); raise if it fails."""
    cpus = set(range(cores))
    done = subprocess.run(command, preexec_fn=lambda: os.sched_setaffinity(0, cpus), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{command[:3]} failed ({done.returncode}): {done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="retail")
    parser.add_argument("--tasks", type=int, default=64, help="tasks, each with its own scenario and gold actions")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per LLM request")
    parser.add_argument("--concurrency", default="8,16,32,64", help="tasks in flight, comma-separated")
    parser.add_argument("--scaling-concurrency", type=int, default=32, help="in flight for the 1-core runs")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tau2-child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--cpu-child", nargs=2, help=argparse.SUPPRESS)
    add_common_flags(parser)
    args = parser.parse_args()
    os.environ["TAU2_BENCH_DOMAIN"] = args.domain
    if args.serve:
        serve(args.latency, args.serve)
        return
    if args.tau2_child:
        base_url, concurrency, ids, out, gc_mode = args.tau2_child
        run_tau2(args.domain, ids.split(","), base_url, int(concurrency), Path(out), gc_mode == "gc-tuned")
        return
    if args.cpu_child:
        ids, out = args.cpu_child
        measure_cpu(args.domain, ids.split(","), Path(out))
        return
    if args.smoke:
        args.tasks, args.latency, args.concurrency, args.repeats, args.scaling_concurrency = 3, 0.01, "3", 1, 0

    task_ids = tasks_with_unique_scenarios(args.domain, args.tasks)
    cores = len(os.sched_getaffinity(0))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.scaling_concurrency and args.scaling_concurrency not in concurrencies:
        raise SystemExit(f"--scaling-concurrency {args.scaling_concurrency} must be one of --concurrency")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port_file = work / "server"
        own = [sys.executable, __file__, "--domain", args.domain]
        server = subprocess.Popen([*own, "--latency", str(args.latency), "--serve", str(port_file)])
        try:
            cpu_per_task = measure_cpu_on_every_core(own, task_ids[:8], cores, work)
            ceiling = {f"cpu_ceiling_{name}": Spread.of([cores / s]) for name, s in cpu_per_task.items()}
            deadline = time.monotonic() + 60
            while not port_file.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the simulated server did not start (exit status {server.poll()})")
                time.sleep(0.2)
            bench = Bench(args.domain, task_ids, port_file.read_text(), work)
            print(f"{len(task_ids)} {args.domain} tasks, {args.latency:g} s per LLM request, {cores} cores", flush=True)
            rates: dict[tuple[str, int, int], list[dict[str, float]]] = {}
            runs = [(concurrency, cores) for concurrency in concurrencies]
            if args.scaling_concurrency:
                runs.append((args.scaling_concurrency, 1))
            for repeat in range(args.repeats):
                for concurrency, on_cores in runs:
                    for runner in (*TAU2_RUNNERS, "matrix"):
                        rate = bench.run(runner, concurrency, on_cores)
                        rates.setdefault((runner, concurrency, on_cores), []).append(rate)
                        print(f"  repeat {repeat}: {runner} {concurrency} in flight on {on_cores} cores: {rate}")
        finally:
            server.kill()

    def spread(runner: str, concurrency: int, on_cores: int, metric: str = "tasks_per_s") -> Spread:
        return Spread.of([rate[metric] for rate in rates[(runner, concurrency, on_cores)]])

    def ratio(top: tuple[str, int, int], bottom: tuple[str, int, int]) -> Spread:
        pairs = zip(rates[top], rates[bottom], strict=True)
        return Spread.of([a["tasks_per_s"] / b["tasks_per_s"] for a, b in pairs])

    params = {"domain": args.domain, "tasks": len(task_ids), "latency_s": args.latency}
    for concurrency in concurrencies:
        ours = spread("matrix", concurrency, cores)
        ratios = {
            name: ratio(("matrix", concurrency, cores), (runner, concurrency, cores))
            for runner, name in TAU2_RUNNERS.items()
        }
        ratios |= {name: Spread.of([s / value.median for s in ours.samples]) for name, value in ceiling.items()}
        results.append(
            Result(
                name="tau2_vs_runner",
                metric="tasks_per_s",
                params={**params, "in_flight": concurrency, "cores": cores},
                ours=ours,
                baselines={name: spread(runner, concurrency, cores) for runner, name in TAU2_RUNNERS.items()} | ceiling,
                ratios=ratios,
                notes=f"CPU s per task, all cores busy ({min(8, len(task_ids))} tasks): {json.dumps(cpu_per_task)}",
            )
        )
        results.append(
            Result(
                name="tau2_vs_runner_tokens",
                metric="tokens_per_s",
                params={**params, "in_flight": concurrency, "cores": cores},
                ours=spread("matrix", concurrency, cores, "tokens_per_s"),
                baselines={
                    name: spread(runner, concurrency, cores, "tokens_per_s") for runner, name in TAU2_RUNNERS.items()
                },
            )
        )
    if args.scaling_concurrency and cores > 1:
        top = args.scaling_concurrency
        results.append(
            Result(
                name="tau2_scaling",
                metric="tasks_per_s",
                params={**params, "in_flight": top, "cores": cores, "compared_with_cores": 1},
                ours=spread("matrix", top, cores),
                baselines={
                    "matrix_1_core": spread("matrix", top, 1),
                    **{name: spread(runner, top, cores) for runner, name in TAU2_RUNNERS.items()},
                    **{f"{name}_1_core": spread(runner, top, 1) for runner, name in TAU2_RUNNERS.items()},
                },
                ratios={
                    "matrix_1_core": ratio(("matrix", top, cores), ("matrix", top, 1)),
                    **{
                        f"{name}_1_core": ratio((runner, top, cores), (runner, top, 1))
                        for runner, name in TAU2_RUNNERS.items()
                    },
                },
                notes="the ratios against tau2_runner*_1_core are tau2's own runner scaling (2 cores over 1), not ours",
            )
        )
    write(f"tau2_vs_runner{args.suffix}", results, args.out, args.smoke, cpu_seconds_per_task=cpu_per_task)


if __name__ == "__main__":
    main()
