"""Where a tau2 task's CPU goes: building its environment, running its tool calls, building each side's chat view,
and scoring: tau2's evaluator as is, then as matrix-tau2 does it (the tool executor reads the predicted state off the
environment it holds, the reward agent scores with it, the gold side computed once per task and then cached).

Each task replays its gold actions (the trajectory a perfect assistant would produce), so the numbers are those of
a solved task. CPU time (``time.process_time``) rather than wall time, so that other load on the machine counts
less. Prints a table per domain and the CPU-bound ceiling (cores / CPU seconds per task).

    python benchmarks/tau2_cpu.py --tasks 5 [--gc-tuned]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    """CPU seconds ``fn`` took, and its result."""
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def gold_trajectory(domain: str, task_id: str) -> tuple[list[Any], float, float, Any]:
    """The gold trajectory of a task, the CPU of building its environment and of running its tool calls, and the
    environment the calls left."""
    from matrix_tau2 import catalog, environments
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage

    task = catalog.task(domain, task_id)
    history = list(task.initial_state.message_history or []) if task.initial_state is not None else []
    build_s, environment = cpu(lambda: environments.build(domain, task_id, history))
    messages: list[Any] = [*history, AssistantMessage(role="assistant", content="Hi!")]
    messages.append(UserMessage(role="user", content="Please help."))
    calls_s = 0.0
    for number, action in enumerate(task.evaluation_criteria.actions or []):
        call = ToolCall(id=f"c{number}", name=action.name, arguments=action.arguments, requestor=action.requestor)
        kind = UserMessage if action.requestor == "user" else AssistantMessage
        messages.append(kind(role=action.requestor, tool_calls=[call]))
        spent, result = cpu(lambda call=call: environment.get_response(call))
        calls_s += spent
        messages.append(result)
    info = task.evaluation_criteria.communicate_info or []
    messages.append(AssistantMessage(role="assistant", content=" ".join(["Done.", *info])))
    messages.append(UserMessage(role="user", content="###STOP###"))
    return messages, build_s, calls_s, environment


def measure(domain: str, task_id: str) -> dict[str, float]:
    """CPU seconds of each part of one task."""
    from matrix_tau2 import catalog, conversation
    from matrix_tau2.scoring import Scorer, predicted_state
    from tau2.data_model.simulation import SimulationRun
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    messages, build_s, calls_s, environment = gold_trajectory(domain, task_id)
    for index, message in enumerate(messages):
        message.turn_idx = index
    run = SimulationRun(
        id="x",
        task_id=task_id,
        start_time="",
        end_time="",
        duration=0.0,
        termination_reason="user_stop",
        messages=messages,
    )
    dump = run.model_dump(mode="json")
    task = catalog.task(domain, task_id)
    tau2_s, expected = cpu(
        lambda: evaluate_simulation(
            simulation=run, task=task, evaluation_type=EvaluationType.ALL, solo_mode=False, domain=domain
        )
    )
    predicted_s, predicted = cpu(lambda: predicted_state(environment, domain, task_id))
    scorer = Scorer()
    first_s, _ = cpu(lambda: scorer.score(domain, task_id, dump, predicted))
    cached_s, got = cpu(lambda: scorer.score(domain, task_id, dump, predicted))
    assert got == expected.model_dump(mode="json"), "cached scoring must equal tau2's"
    dumps = [conversation.dump_message(message) for message in messages]
    views_s = 0.0
    for end in range(1, len(dumps) + 1):  # each step rebuilds one side's view of the trajectory so far
        spent, _ = cpu(
            lambda end=end: conversation.assistant_view(
                conversation.assistant_system_prompt(domain), conversation.load_messages(dumps[:end])
            )
        )
        views_s += spent
    return {
        "steps": float(len(messages)),
        "env_build": build_s,
        "tool_calls": calls_s,
        "views": views_s,
        "score_tau2": tau2_s,
        "predicted_state": predicted_s,
        "score_first": first_s,
        "score_cached": cached_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5, help="tasks per domain (those with gold actions)")
    parser.add_argument("--domains", default="airline,retail,telecom")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--gc-tuned", action="store_true", help="under the garbage-collector settings of Matrix's actors"
    )
    args = parser.parse_args()

    from matrix_tau2 import catalog

    from matrix_core.config import RunConfig
    from matrix_core.engine import gc_settings

    for domain in args.domains.split(","):
        catalog.domain_info(domain)  # warm: tasks, policy, tool schemas (once per process)
        if args.gc_tuned:
            gc_settings.settle(RunConfig().gc_threshold)
        ids = [t.id for t in catalog._tasks(domain, None).values() if t.evaluation_criteria.actions][: args.tasks]
        rows = [measure(domain, task_id) for task_id in ids]
        mean = {key: statistics.mean(row[key] for row in rows) for key in rows[0]}
        tau2_task = mean["env_build"] + mean["tool_calls"] + mean["views"] + mean["score_tau2"]
        ours_task = mean["env_build"] + mean["tool_calls"] + mean["views"] + mean["predicted_state"]
        ours_task += mean["score_cached"]
        print(f"\n{domain}: mean over {len(rows)} tasks, CPU ms ({mean['steps']:.0f} messages per task)")
        for key in ("env_build", "tool_calls", "views", "score_tau2", "predicted_state", "score_first", "score_cached"):
            print(f"  {key:<14} {mean[key] * 1000:8.1f}")
        for label, per_task in (("tau2's scoring", tau2_task), ("gold side cached", ours_task)):
            ceiling = args.cores / per_task
            print(f"  per task, {label:<17} {per_task * 1000:8.1f} ms -> ceiling {ceiling:6.1f} tasks/s")


if __name__ == "__main__":
    main()
