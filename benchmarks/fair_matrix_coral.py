"""Runs fair-matrix 0.2.6's own peer-to-peer Collaborative Reasoner pipeline against an OpenAI-compatible server.

Run with the Python of fair-matrix's own virtual environment, never the project's (``fair_matrix_vs_ours.py``
does): the project never imports fair-matrix. Everything is fair-matrix's code (its ``coral_mmlu_pro`` config, its
``P2PAgentFramework``, agents, sink and ``query_llm`` client) except two things a cluster would normally provide:

- the LLM endpoint: fair-matrix looks its model servers up in a Matrix (Ray Serve) cluster;
  :class:`fair_matrix_llm.DirectLLM` is its ``LLMResourceClient`` with that lookup replaced by a fixed base URL;
- the Ray resources: its config asks for 5.5 CPUs per team (1 per agent, 2 for the sink); on 2 cores they are set
  to 0, as the project's own actors ask for, so that the team can be placed at all.

    python fair_matrix_coral.py --base-url http://127.0.0.1:PORT/v1 --data rows.jsonl --concurrency 100 --output o.jsonl

prints one JSON line: tasks, wall seconds and fair-matrix's own metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROLES = ("teacher", "student", "answer_extractor", "answer_matcher", "_sink")
LLMS = ("teacher_llm", "student_llm", "extractor_llm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="simulated-gpu")
    parser.add_argument("--data", type=Path, required=True, help="MMLU-Pro-layout jsonl")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    import ray
    from hydra import compose, initialize_config_dir
    from matrix.agents import p2p_agents

    config_dir = Path(p2p_agents.__file__).parent / "config"
    overrides = [
        f"max_concurrent_tasks={args.concurrency}",
        "dataset.name=json",
        "dataset.split=train",
        f"dataset.data_files={args.data}",
        "dataset.cut_off=null",
        f"output.path={args.output}",
        f"matrix.matrix_dir={tempfile.mkdtemp(prefix='fair-matrix-')}",
        *(f"agents.{role}.ray_resources.num_cpus=0" for role in ROLES),
    ]
    for llm in LLMS:
        overrides += [
            f"resources.{llm}._target_=fair_matrix_llm.DirectLLM",
            f"+resources.{llm}.base_url={args.base_url}",
            f"+resources.{llm}.model={args.model}",
            f"~resources.{llm}.matrix_service",
        ]
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="coral_mmlu_pro", overrides=overrides)

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    here = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        framework = p2p_agents.P2PAgentFramework(0, cfg)
        started = time.monotonic()
        metrics = asyncio.run(framework.run_simulation())
        seconds = time.monotonic() - started
    finally:
        ray.shutdown()
    tasks = sum(1 for _ in args.output.open())
    print(json.dumps({"tasks": tasks, "wall_s": round(seconds, 3), "metrics": metrics}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
