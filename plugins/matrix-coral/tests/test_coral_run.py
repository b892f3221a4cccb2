"""`matrix run coral` end to end: real Ray actors against the test server, whose replies script each conversation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from matrix_coral.prompts import EXTRACTOR_SYSTEM_PROMPT

from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer

PLANS: dict[str, dict[int, str | None]] = {
    "agree-on-4": {1: "A", 2: None, 3: "A", 4: "A"},
    "agree-wrong": {1: "B", 2: "B"},
    "never": {turn: "AB"[(turn + 1) % 2] for turn in range(1, 7)},
    "fail-on-3": {1: "A", 2: "B", 3: "fail"},
}
"""For each question, the answer each generated turn commits to (None: none); the gold answer is always A."""


def script(body: dict[str, Any]) -> str:
    """Plays teacher, student and extractor for the questions of PLANS, or agrees on (A) at once for others."""
    messages = body["messages"]
    if messages[0]["content"] == EXTRACTOR_SYSTEM_PROMPT:
        turn = messages[1]["content"].split("extract answer from:**\n\n", 1)[1]
        letter = re.search(r"\(([A-Z])\)", turn)
        return f"The answer is ({letter.group(1)})." if letter else "not sure yet"
    number = len(messages) - 1  # system prompt, question, then the turns before this one
    question = re.search(r'solve this problem: "(.*)"', messages[1]["content"], re.DOTALL).group(1)
    answer = PLANS[question][number] if question in PLANS else "A"
    if answer == "fail":
        raise RuntimeError(f"turn {number} fails")
    return (
        f"Turn {number}: I think the correct answer is ({answer})." if answer else f"Turn {number}: let me think again."
    )


def rows(*questions: str) -> list[dict[str, Any]]:
    return [{"question_id": q, "question": q, "options": ["yes", "no", "maybe"], "answer": "A"} for q in questions]


def run(server: FakeOpenAIServer, *args: str) -> None:
    # six turns, the demo profile's, so that a conversation that never agrees ends quickly
    options = [f"backend.base_url={server.base_url}", "run.retry_backoff_s=0.01", "coral.max_turns=6", "-q"]
    result = CliRunner().invoke(cli, ["run", "coral", "backend.type=openai", *options, *args])
    assert result.exit_code == 0, result.output


def read(path: Path) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def scenarios(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows(*PLANS)))
    return path


def test_conversations_stop_at_agreement_max_turns_or_a_backend_failure(ray_session, scenarios, tmp_path):
    output = tmp_path / "out.jsonl"
    with FakeOpenAIServer(reply=script).in_thread() as server:
        run(server, "-i", str(scenarios), "-o", str(output), "run.max_retries=1")
    records = read(output)
    stops = {id: (r["status"], r["reason"], r["n_turns"], r["agreement_correctness"]) for id, r in records.items()}
    failure = records["fail-on-3"]["reason"]
    assert stops == {
        "agree-on-4": ("success", "agreement", 4, True),
        "agree-wrong": ("success", "agreement", 2, False),
        "never": ("max_turns", "no agreement in 6 turns", 6, False),
        "fail-on-3": ("error", failure, 2, False),
    }
    assert failure == f"{server.base_url} answered HTTP 500: scripted failure: turn 3 fails"
    assert server.stats()["failures"] == 2, "the failing step was tried twice (run.max_retries=1)"
    agreed = records["agree-on-4"]
    assert [(t["role"], t["answer"], t["valid"]) for t in agreed["turns"]] == [
        ("teacher", "A", True),
        ("student", None, False),
        ("teacher", "A", True),
        ("student", "A", True),
    ]
    assert agreed["turns"][0]["text"] == "Turn 1: I think the correct answer is (A)."
    assert agreed["turns"][0]["usage"]["completion_tokens"] == 9, "the fake server counts words"

    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == {"success": 2, "max_turns": 1, "error": 1}
    assert metrics["workflow"] == {
        "agreement": 0.5,
        "agreement_correctness": 0.25,
        "final_success_rate": 0.75,
        "valid_answer_rate": (0.75 + 1 + 1 + 1) / 4,
        "conv_err": 0.25,
        "n_turns": 3.5,
        "teacher_tokens": 9.0,
        "student_tokens": ((6 + 9) / 2 + 9 + 9 + 9) / 4,
        "conversation_tokens": (33 + 18 + 54 + 18) / 4,
    }

    page = CliRunner().invoke(cli, ["report", str(output)])
    assert page.exit_code == 0, page.output
    text = (tmp_path / "out.report.html").read_text()
    for title in ("Agreement", "Turns to agreement", "By category", "Example conversations"):
        assert f"<h2>{title}</h2>" in text, title
    agreement = re.search(r"<td>agreed</td><td class=\"n\">(\d+)</td><td class=\"n\">([\d.]+)</td>", text)
    assert agreement is not None and agreement.groups() == ("2", "50"), "2 of 4 agreed, as metrics.json says"

    chats = [request.body for request in server.requests if request.path.endswith("/chat/completions")]
    extractions = [body for body in chats if body["messages"][0]["content"] == EXTRACTOR_SYSTEM_PROMPT]
    turns = [body for body in chats if body not in extractions]
    assert len(extractions) == 4 + 2 + 6 + 2
    assert len(turns) == 4 + 2 + 6 + 2 + 2, "the failing turn was asked twice"
    first = next(body for body in turns if "agree-on-4" in body["messages"][1]["content"])
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.2, 0.9, 1024)
    student = next(body for body in turns if len(body["messages"]) == 3)
    assert [m["role"] for m in student["messages"]] == ["system", "assistant", "user"]
    assert {(body["temperature"], body["max_tokens"]) for body in extractions} == {(0.0, 32)}


def test_training_data_keeps_only_correct_agreements_as_chat_examples(ray_session, scenarios, tmp_path):
    output = tmp_path / "sft.jsonl"
    with FakeOpenAIServer(reply=script).in_thread() as server:
        run(server, "-i", str(scenarios), "-o", str(output), "coral.keep=agreement_correct", "coral.export=sft")
    [record] = read(output).values()
    assert (record["id"], record["status"], len(record["examples"])) == ("agree-on-4", "success", 4)
    last = record["examples"][-1]
    assert [m["role"] for m in last["prompt"]] == ["system", "assistant", "user", "assistant", "user"]
    assert last["completion"] == [{"role": "assistant", "content": "Turn 4: I think the correct answer is (A)."}]
    dropped = read(tmp_path / "sft.dropped.jsonl")
    assert {id: r["status"] for id, r in dropped.items()} == {
        "agree-wrong": "success",
        "never": "max_turns",
        "fail-on-3": "error",
    }


def test_a_row_in_no_known_format_stops_the_run_in_one_line_or_is_skipped(ray_session, tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps(rows("agree-wrong")[0]) + '\n{"question_id": "odd", "prompt": "?"}\n')
    args = ["-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]
    with FakeOpenAIServer(reply=script).in_thread() as server:
        options = [f"backend.base_url={server.base_url}", "backend.type=openai", "-q"]
        stopped = CliRunner().invoke(cli, ["run", "coral", *options, *args])
        assert stopped.exit_code == 1 and "Traceback" not in stopped.output
        assert stopped.output.splitlines()[0] == (
            f"Error: {tmp_path / 'in.jsonl'}:2: row 'odd': cannot tell the dataset format of a row with fields "
            "['prompt', 'question_id']"
        )
        for leftover in tmp_path.glob("out.*"):
            leftover.unlink()
        run(server, *args, "--skip-bad-rows")
    assert list(read(tmp_path / "out.jsonl")) == ["agree-wrong"]
    [rejected] = read_lines(tmp_path / "out.rejected.jsonl")
    assert rejected["where"] == f"{tmp_path / 'in.jsonl'}:2"
    assert rejected["error"].startswith("row 'odd': cannot tell the dataset format")


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_runs_only_the_questions_not_yet_written(ray_session, tmp_path):
    output = tmp_path / "coral.jsonl"
    with FakeOpenAIServer(reply=script).in_thread() as server:
        run(server, "--limit", "4", "-o", str(output), "coral.max_turns=2")  # the bundled questions
    records = output.read_text().splitlines()
    assert len(records) == 4 and all(json.loads(r)["status"] == "success" for r in records)
    kept = [json.loads(r)["id"] for r in records[:2]]
    output.write_text(records[0] + "\n" + records[1] + "\n" + records[2][:40])  # a crash tore the third line

    with FakeOpenAIServer(reply=script).in_thread() as server:
        run(server, "--limit", "4", "-o", str(output), "coral.max_turns=2", "--resume")
    chats = [request.body for request in server.requests if request.path.endswith("/chat/completions")]
    teachers = [body for body in chats if body["messages"][0]["content"] != EXTRACTOR_SYSTEM_PROMPT]
    opened = [body["messages"][1]["content"] for body in teachers if len(body["messages"]) == 2]
    finished = read(output)
    assert len(finished) == 4 and set(kept) <= set(finished)
    assert sorted(opened) == sorted(r["prompt"] for id, r in finished.items() if id not in kept), "only the others ran"
    assert len(output.read_text().splitlines()) == 4, "every question exactly once"
    metrics = json.loads((tmp_path / "coral.metrics.json").read_text())
    assert (metrics["skipped_finished"], metrics["admitted"]) == (2, 2)
