"""NaturalReasoning on the engine: documents/s and output tokens/s of ``matrix run naturalreasoning`` (one partition,
the default) against a batch-per-stage pipeline in the style of Ray Data (``naturalreasoning_pipelining``; the paper:
2.1x), and of ``run.partitions`` 20 against 1 at the same total concurrency (``naturalreasoning_partitions``; the
paper's data-parallel gain: 1.61x), side by side in each repeat, on one simulated GPU.

    python benchmarks/naturalreasoning_partitions.py              # 6,000 documents, 300 in flight, 3 repeats
    python benchmarks/naturalreasoning_partitions.py --smoke

The documents carry a precomputed English score (as DCLM's do); the simulated GPU's replies (:func:`reply`) send
them through the stages with the paper's early exits: 10% stop at the language gate, 85% of the rest at the
classifier, half of the scored ones at the rubric and a fifth of the questions at a missing box, so that about 5.4%
become questions. Stage lengths: the classifier's 8 tokens; the rubric and the question draw from the simulated
GPU's lognormal (mean ``--mean-output-tokens``), cut at 1,024 and 2,048 tokens. Every orchestration sends the same
requests (checked on the GPU's counts), so only the orchestration differs.

- ``p1`` / ``p20``: ``matrix run naturalreasoning`` with ``run.partitions`` 1 and 20, ``run.max_concurrency`` the
  total divided among them.
- ``batch_per_stage``: every document through the filter, then the survivors through the rubric, then through the
  question stage, each stage a barrier with ``concurrency`` requests in flight: a ``map_batches`` pipeline
  materialising each stage.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from matrix_naturalreasoning.prompts import FILTER_PROMPT, QUESTION_PROMPT, SCORE_PROMPT, chat
from matrix_naturalreasoning.replies import classifier_passes, parse_question, parse_scores
from results import Result, Spread, add_common_flags, write
from simulated_gpu import GpuConfig, Meter, filler, serve_in_process

HERE = Path(__file__).parent
SAMPLING = {
    "filter": {"temperature": 1.0, "top_p": 0.95, "max_tokens": 8},
    "score": {"temperature": 0.2, "top_p": 0.9, "max_tokens": 1024},
    "question": {"temperature": 0.0, "top_p": 0.9, "max_tokens": 2048},
}
FATES = {"classifier": 0.85, "score": 0.5, "no_boxed_answer": 0.2}
"""The share of the documents reaching each gate that it stops (the language gate's is in :func:`documents`)."""
PARAGRAPH = (
    "I tried to show that the series converges by comparing it with a telescoping sum, but a reply pointed out "
    "that the comparison only bounds the partial sums from above; another answer then derived the exact value. "
)


def documents(count: int) -> list[dict[str, Any]]:
    """``count`` DCLM-style rows of about 2,000 characters; one in ten below the English gate."""
    rows = []
    for number in range(count):
        english = 0.5 if _draw(f"en:{number}") < 0.1 else 0.95
        rows.append(
            {
                "text": f"Thread {number}. " + PARAGRAPH * 8,
                "url": f"https://forum.example.org/t/{number}",
                "metadata": {"WARC-Record-ID": f"<urn:uuid:bench-{number}>"},
                "language_id_whole_page_fasttext": {"en": english},
            }
        )
    return rows


def reply(body: dict[str, Any], produced: int) -> str:
    """The simulated GPU's answer for one stage of one document: its fate is a hash of the document."""
    system, text = (message["content"] for message in body["messages"])
    if system == FILTER_PROMPT:
        return "No" if _draw(f"classifier:{text}") < FATES["classifier"] else "Yes"
    if system == SCORE_PROMPT:
        criteria = 0 if _draw(f"score:{text}") < FATES["score"] else 1
        scores = {f"criteria_{index}": criteria if index == 2 else 1 for index in range(1, 5)}
        return f"{filler(max(1, produced - 40))}\n```json\n{json.dumps(scores)}\n```"
    boxed = _draw(f"box:{text}") >= FATES["no_boxed_answer"]
    last = "Therefore, the final answer is: \\boxed{2}." if boxed else "So the answer is 2."
    question = {
        "exam_question": "What is the value of the series?",
        "question_category": "Mathematics",
        "extracted_answer": "",
        "independent_answer": [filler(max(1, produced - 60)), last],
    }
    return f"```json\n{json.dumps(question)}\n```"


def _draw(key: str) -> float:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest()) / 2**64


def run_engine(base_url: str, rows_path: Path, concurrency: int, partitions: int, workdir: Path) -> int:
    """One ``naturalreasoning`` run; returns the questions it made."""
    from matrix_core import config
    from matrix_core.engine.run import run_workflow
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    output = workdir / f"nr-{partitions}-{os.urandom(4).hex()}.jsonl"
    overrides = [
        f"input.path={rows_path}",
        f"output.path={output}",
        "backend.type=openai",
        f"backend.base_url={base_url}",
        f"run.partitions={partitions}",  # the experiment: 20 partitions against 1 at the same total concurrency
        f"run.max_concurrency={-(-concurrency // partitions)}",
        "run.quiet=true",
        # The baseline's sampling (max_tokens per stage), so that both send the same requests.
        *(f"agents.{role}.sampling.max_tokens={SAMPLING[role]['max_tokens']}" for role in SAMPLING),
    ]
    workflow = registry.get("orchestrators", "naturalreasoning")
    metrics = run_workflow(config.resolve(workflow, registry, config.parse_overrides(overrides)), registry)
    if metrics.status.get("error"):
        raise RuntimeError(f"the run had errors: {metrics.status_reason}")
    return metrics.status.get("success", 0)


async def batch_per_stage(base_url: str, rows: list[dict[str, Any]], concurrency: int) -> int:
    """Each stage over all of its documents before the next starts; returns the questions made."""
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    # The baseline's own client, not Matrix: its max_retries never fires here (the simulated GPU does not fail).
    client = openai.AsyncOpenAI(
        api_key="EMPTY", base_url=base_url, max_retries=5, http_client=openai.DefaultAsyncHttpxClient(limits=limits)
    )
    model = (await client.models.list()).data[0].id
    slots = asyncio.Semaphore(concurrency)

    async def stage(role: str, prompt: str, texts: list[str]) -> list[str]:
        async def one(text: str) -> str:
            async with slots:
                completion = await client.chat.completions.create(
                    model=model, messages=chat(prompt, text), **SAMPLING[role]
                )
            return completion.choices[0].message.content or ""

        return await asyncio.gather(*(one(text) for text in texts))

    try:
        texts = [row["text"] for row in rows if row["language_id_whole_page_fasttext"]["en"] >= 0.8]
        answers = await stage("filter", FILTER_PROMPT, texts)
        texts = [text for text, answer in zip(texts, answers, strict=True) if classifier_passes(answer)]
        replies = await stage("score", SCORE_PROMPT, texts)
        texts = [text for text, text_reply in zip(texts, replies, strict=True) if _scored(text_reply)]
        replies = await stage("question", QUESTION_PROMPT, texts)
        return sum(_question(text_reply) for text_reply in replies)
    finally:
        await client.close()


def _scored(text: str) -> bool:
    scores = parse_scores(text)
    return scores is not None and scores.passed()


def _question(text: str) -> bool:
    question = parse_question(text)
    return question is not None and question.problem() is None


def measure(base_url: str, run: Callable[[], int]) -> tuple[float, float, tuple[int, int, int]]:
    """Documents/s and output tokens/s on the simulated GPU's clock, and the work done (requests, tokens,
    questions)."""
    with Meter(base_url) as meter:
        questions = run()
    return meter.seconds, meter.rate("completion_tokens"), (meter.completed, meter.completion_tokens, questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_flags(parser)
    parser.add_argument("--documents", type=int, default=6_000)
    parser.add_argument("--concurrency", type=int, default=300, help="documents in flight, in total")
    parser.add_argument("--partitions", type=int, default=20, help="compared with 1")
    parser.add_argument("--slots", type=int, default=1_024, help="the simulated GPU's decode slots")
    parser.add_argument("--decode-tps", type=float, default=200.0, help="per sequence")
    parser.add_argument("--mean-output-tokens", type=float, default=300.0)
    args = parser.parse_args()
    if args.smoke:
        args.documents, args.concurrency, args.partitions, args.repeats, args.slots = 150, 20, 2, 1, 64

    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    gpu = GpuConfig(
        slots=args.slots,
        decode_tps=args.decode_tps,
        mean_output_tokens=args.mean_output_tokens,
        reply="naturalreasoning_partitions:reply",
    )
    rows = documents(args.documents)
    names = ("p1", f"p{args.partitions}", "batch_per_stage")
    seconds: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, list[float]] = {name: [] for name in names}
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with serve_in_process(gpu) as base_url, tempfile.TemporaryDirectory() as workdir:
            rows_path = Path(workdir) / "documents.jsonl"
            rows_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
            runs = {
                "p1": partial(run_engine, base_url, rows_path, args.concurrency, 1, Path(workdir)),
                names[1]: partial(run_engine, base_url, rows_path, args.concurrency, args.partitions, Path(workdir)),
                "batch_per_stage": lambda: asyncio.run(batch_per_stage(base_url, rows, args.concurrency)),
            }
            for _ in range(args.repeats):
                works = []
                for name, run in runs.items():
                    span, rate, work = measure(base_url, run)
                    seconds[name].append(span)
                    tokens[name].append(rate)
                    works.append(work)
                if any(work != works[0] for work in works):
                    raise RuntimeError(f"the orchestrations did different work: {works}")
    finally:
        ray.shutdown()
    params = {
        "documents": len(rows),
        "in_flight": args.concurrency,
        "requests": works[0][0],
        "questions": works[0][2],
    }
    comparisons = (  # (result, ours, baseline, its params, the paper's figure, the goal on one machine)
        (
            "naturalreasoning_pipelining",
            "p1",
            "batch_per_stage",
            params,
            "the paper: 2.1x over Ray Data's stages",
            None,
        ),
        (
            "naturalreasoning_partitions",
            names[1],
            "p1",
            {**params, "partitions": args.partitions},
            "the paper: 1.61x over one partition, on a cluster",
            0.95,  # no loss on one machine
        ),
    )
    metrics = {
        "documents_per_s": {run: [len(rows) / span for span in spans] for run, spans in seconds.items()},
        "output_tokens_per_s": tokens,
    }
    results = []
    for name, ours, baseline, result_params, notes, goal in comparisons:
        for metric, values in metrics.items():
            ratios = [o / b for o, b in zip(values[ours], values[baseline], strict=True)]
            results.append(
                Result(
                    name=name,
                    metric=metric,
                    params=result_params,
                    ours=Spread.of(values[ours]),
                    baselines={baseline: Spread.of(values[baseline])},
                    ratios={baseline: Spread.of(ratios)},
                    goal=f">= {goal}x" if goal else "",
                    goal_value=goal,
                    goal_on=(baseline,) if goal else (),
                    notes=notes,
                )
            )
    write("naturalreasoning_partitions", results, args.out, args.smoke, gpu=gpu.__dict__)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
