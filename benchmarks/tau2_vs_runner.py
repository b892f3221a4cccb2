"""tau2 tasks/s: matrix-tau2 against tau2's own threaded runner, on the same simulated server and task set.

The server (the project's FakeOpenAIServer in a process of its own, with a fixed latency per request) plays both
sides of every conversation: the user asks, the assistant makes the task's gold tool calls one per turn and says
what the task expects, the user stops. So every simulation is a solved task (reward 1.0) of the same length on
both sides, and the comparison measures the runners, not a model.

    python benchmarks/tau2_vs_runner.py --domain retail --tasks 24 --latency 0.5 --concurrency 8,32

prints, per concurrency, tau2's runner (``tau2.run.run_tasks``, threads, ``max_concurrency``) and Matrix (``matrix run
tau2``, the same tasks) side by side: tasks/s, tokens/s and mean reward. Both rates are over the simulations only:
tau2's from its ``run_tasks`` call, Matrix's ``flow_time_s`` (from the first admission, after the actors started).
The CPU-bound ceiling to compare them with comes from ``benchmarks/tau2_cpu.py`` (cores / CPU seconds per task).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def run_tau2(domain: str, task_ids: list[str], base_url: str, concurrency: int, out: Path) -> None:
    """tau2's own runner, in this process (called in a child process by :func:`main`)."""
    from loguru import logger

    logger.disable("tau2")
    from matrix_tau2 import catalog
    from tau2.run import run_tasks
    from tau2.utils.llm_utils import get_token_usage

    tasks = [catalog.task(domain, task_id) for task_id in task_ids]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="retail")
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per LLM request")
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tau2-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["TAU2_BENCH_DOMAIN"] = args.domain
    if args.serve:
        serve(args.latency, args.serve)
        return
    if args.tau2_child:
        base_url, concurrency, ids, out = args.tau2_child
        run_tau2(args.domain, ids.split(","), base_url, int(concurrency), Path(out))
        return

    task_ids = tasks_with_unique_scenarios(args.domain, args.tasks)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port_file = work / "server"
        own = [sys.executable, __file__, "--domain", args.domain]
        server = subprocess.Popen([*own, "--latency", str(args.latency), "--serve", str(port_file)])
        try:
            while not port_file.exists():
                time.sleep(0.2)
            base_url = port_file.read_text()
            rows = work / "rows.jsonl"
            rows.write_text(
                "".join(json.dumps({"id": t, "domain": args.domain, "task_id": t}) + "\n" for t in task_ids)
            )
            print(f"{len(task_ids)} {args.domain} tasks, {args.latency:g} s per LLM request, {cores} cores")
            print("{:<8} {:>9} {:>8} {:>9} {:>6}".format("runner", "in flight", "tasks/s", "tokens/s", "reward"))
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                for name in ("tau2", "matrix"):
                    if name == "tau2":
                        out = work / f"tau2-{concurrency}.json"
                        child = ["--tau2-child", base_url, str(concurrency), ",".join(task_ids), str(out)]
                        subprocess.run([*own, *child], check=True)
                        result = json.loads(out.read_text())
                        wall, tokens, reward = result["wall_s"], result["tokens"], result["reward"]
                    else:
                        output = work / f"matrix-{concurrency}.jsonl"
                        options = [f"backend.base_url={base_url}", f"run.max_concurrency={concurrency}"]
                        options += ["tau2.max_steps=200", "tau2.sampling.max_tokens=null"]
                        command = [
                            "matrix",
                            "run",
                            "tau2",
                            "-i",
                            str(rows),
                            "-o",
                            str(output),
                            "-q",
                            "backend.type=openai",
                        ]
                        subprocess.run([*command, *options], check=True)
                        metrics = json.loads(output.with_name(output.stem + ".metrics.json").read_text())
                        wall = metrics["flow_time_s"]
                        tokens = metrics["tokens_in"] + metrics["tokens_out"]
                        reward = metrics["workflow"]["reward"]
                    rate = len(task_ids) / wall
                    print(f"{name:<8} {concurrency:>9} {rate:>8.2f} {tokens / wall:>9.0f} {reward:>6.2f}")
        finally:
            server.kill()


if __name__ == "__main__":
    main()
