"""The benchmarks: the simulated GPU and the helpers they share, checked directly, and each benchmark's smoke mode, so
that they do not rot. No timing is asserted (this machine is shared): only that they run and write well-formed
results."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import coral_script  # noqa: E402
import ideal_client  # noqa: E402
from results import Result, Spread  # noqa: E402
from simulated_gpu import GpuConfig, Meter, _to_flags, output_length, parse_args, serve, serve_in_process  # noqa: E402


@asynccontextmanager
async def simulated_gpu(config: GpuConfig) -> AsyncIterator[str]:
    """The simulated GPU in this event loop; yields its base URL."""
    announced: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.ensure_future(serve(config, announce=lambda line: announced.set_result(line.split()[-1])))
    try:
        yield await asyncio.wait_for(announced, 10)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def chat(session: aiohttp.ClientSession, url: str, content: str, **body: object) -> tuple[int, dict, dict]:
    async with session.post(
        f"{url}/chat/completions", json={"messages": [{"role": "user", "content": content}], **body}
    ) as r:
        return r.status, dict(r.headers), await r.json()


async def stats(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url.removesuffix("/v1") + "/stats") as response:
        return await response.json()


def test_output_lengths_are_deterministic_per_request_and_lognormal():
    config = GpuConfig(mean_output_tokens=100, sigma=0.5, seed=1)
    lengths = [output_length([{"role": "user", "content": f"prompt {i}"}], config) for i in range(2000)]
    again = [output_length([{"role": "user", "content": f"prompt {i}"}], config) for i in range(2000)]
    assert lengths == again
    assert 90 < sum(lengths) / len(lengths) < 110  # the lognormal's mean is the configured one
    assert len(set(lengths)) > 50
    assert output_length([{"role": "user", "content": "x"}], GpuConfig(sigma=0, mean_output_tokens=7)) == 7


def test_chat_models_and_stats():
    async def scenario() -> None:
        config = GpuConfig(slots=2, decode_tps=10_000, mean_output_tokens=30, sigma=0.0, model="sim")
        async with simulated_gpu(config) as url, aiohttp.ClientSession() as session:
            async with session.get(f"{url}/models") as response:
                assert (await response.json())["data"][0]["id"] == "sim"
            status, _, body = await chat(session, url, "hello")
            assert status == 200
            assert body["choices"][0]["message"]["content"] == " ".join(["tok"] * 30)
            assert body["choices"][0]["finish_reason"] == "stop"
            assert body["usage"]["completion_tokens"] == 30
            status, _, body = await chat(session, url, "hello", max_tokens=5)
            assert body["usage"]["completion_tokens"] == 5
            assert body["choices"][0]["finish_reason"] == "length"
            async with session.post(f"{url}/chat/completions", json={"prompt": "no messages"}) as response:
                assert response.status == 400
            counts = await stats(session, url)
            assert counts["completed"] == 2
            assert counts["completion_tokens"] == 35
            assert counts["slots"] == 2
            assert counts["busy_slot_seconds"] > 0

    asyncio.run(scenario())


def test_requests_beyond_the_slots_queue_in_order():
    async def scenario() -> None:
        config = GpuConfig(slots=2, decode_tps=100, mean_output_tokens=10, sigma=0.0)  # 0.1 s each
        async with simulated_gpu(config) as url, aiohttp.ClientSession() as session:
            await asyncio.gather(*(chat(session, url, f"p{i}") for i in range(6)))
            counts = await stats(session, url)
            assert counts["completed"] == 6
            assert counts["max_queued"] == 4
            assert counts["queued"] == counts["in_flight"] == 0

    asyncio.run(scenario())


def test_failures_and_rate_limits():
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            async with simulated_gpu(GpuConfig(rate_limit_rate=1.0, retry_after_s=0.25)) as url:
                status, headers, body = await chat(session, url, "hello")
                assert status == 429
                assert headers["Retry-After"] == "0.25"
                assert (await stats(session, url))["rate_limited"] == 1
            async with simulated_gpu(GpuConfig(failure_rate=1.0, decode_tps=10_000)) as url:
                status, _, body = await chat(session, url, "hello")
                assert status == 500
                assert body["error"]["type"] == "server_error"
                assert (await stats(session, url))["failures"] == 1

    asyncio.run(scenario())


def test_command_line_flags_round_trip():
    config = GpuConfig(slots=7, decode_tps=12.5, failure_rate=0.1, reply="coral_script:reply")
    assert parse_args(_to_flags(config)) == (config, 0)


def test_ideal_client_and_meter_against_a_server_in_its_own_process():
    config = GpuConfig(slots=8, decode_tps=5_000, mean_output_tokens=20)
    with serve_in_process(config) as url:
        bodies = [{"messages": [{"role": "user", "content": f"p{i}"}]} for i in range(40)]
        with Meter(url) as meter:
            answered = asyncio.run(ideal_client.run(url, bodies, concurrency=8))
        assert answered == 40
        assert meter.completed == 40
        assert meter.completion_tokens == sum(output_length(b["messages"], config) for b in bodies)
        assert len(meter.completion_times) == 40
        assert meter.seconds > 0


def test_coral_script_agrees_after_the_questions_number_of_turns():
    question = 'I\'m trying to solve this problem: "What is 2 + 2? (variant 7)"\nAnd the choices are:\n(A) 4\n(B) 5'
    wanted = coral_script.turns_for("What is 2 + 2? (variant 7)")
    history = [{"role": "system", "content": "..."}, {"role": "user", "content": question}]
    answers = []
    while len(answers) < coral_script.MAX_TURNS:
        text = coral_script.reply({"messages": history, "max_tokens": 1024}, 12)
        extracted = coral_script.reply({"messages": [{"role": "user", "content": text}], "max_tokens": 32}, 32)
        answers.append(extracted)
        history.append({"role": "assistant", "content": text})
        if len(answers) >= 2 and answers[-1] == answers[-2]:
            break
    assert len(answers) == wanted
    assert answers[-1] == "The answer is (A)."
    assert len(set(answers[:-2])) <= 2 and "The answer is (A)." not in answers[:-2]
    assert coral_script.reply({"messages": [{"role": "user", "content": "no answer here"}], "max_tokens": 32}, 8) == (
        "not sure yet"
    )


def test_results_verdicts_and_lines():
    spread = Spread.of([3.0, 1.0, 2.0])
    assert (spread.median, spread.low, spread.high) == (2.0, 1.0, 3.0)
    higher = Result(
        "x",
        "rate",
        {"n": 1},
        spread,
        ratios={"base": Spread.of([2.5])},
        goal=">= 2x",
        goal_value=2.0,
        goal_on=("base",),
    )
    assert higher.met() is True
    assert higher.line() == "x n=1 rate=2.00 [1.00-3.00] ratio_vs_base=2.50x goal=>= 2x MET"
    lower = Result("y", "kb", {}, Spread.of([25.0]), goal="<= 20 KB", goal_value=20.0, goal_on=("ours",))
    assert lower.met() is False
    assert Result("z", "kb", {}, spread).met() is None


def run_smoke(script: str, out: Path, timeout: int = 400, positive: bool = True) -> list[dict]:
    """Run ``script --smoke``; returns the results of the JSON file it wrote, after checking its summary lines (and,
    with ``positive``, that every measured value is above zero: not where a result counts failures)."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        cwd=BENCHMARKS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = out.glob("*.json")
    document = json.loads(path.read_text())
    assert document["smoke"] is True
    assert {"date", "commit", "machine", "benchmark"} <= set(document)
    for entry in document["results"]:
        assert entry["ours"]["low"] <= entry["ours"]["median"] <= entry["ours"]["high"]
        if positive:
            assert entry["ours"]["median"] > 0
            assert all(spread["median"] > 0 for spread in entry["baselines"].values())
        assert any(line.startswith(entry["name"] + " ") for line in result.stdout.splitlines())
    return document["results"]


def test_hop_rate_smoke(tmp_path):
    [entry] = run_smoke("hop_rate.py", tmp_path)
    assert entry["params"]["in_flight"] == 50
    assert set(entry["baselines"]) == {"one_call_per_task", "coalesced_2ms"}


def test_efficiency_smoke(tmp_path):
    [entry] = run_smoke("efficiency.py", tmp_path)
    assert set(entry["ratios"]) == {"ideal_client"}
    assert entry["met"] in (True, False)


def test_p2p_vs_baselines_smoke(tmp_path):
    [entry] = run_smoke("p2p_vs_baselines.py", tmp_path)
    assert set(entry["baselines"]) == {"central_controller", "batch_barrier"}
    assert entry["params"]["requests"] > entry["params"]["conversations"]


def test_memory_smoke(tmp_path):
    per_task, flat = run_smoke("memory.py", tmp_path)
    assert per_task["name"] == "memory_per_task"
    assert flat["baselines"]["early_mb"]["median"] > 0


def test_scale_smoke(tmp_path):
    memory, resume, partitions = run_smoke("scale.py", tmp_path)
    assert memory["baselines"]["rows_10000"]["median"] > 0
    assert 0 < resume["ours"]["median"] <= resume["baselines"]["whole_resume_s"]["median"]
    assert partitions["baselines"]["p1"]["median"] > 0


def test_offloading_smoke(tmp_path):
    mean, last, throughput = run_smoke("offloading.py", tmp_path)
    # offloaded messages carry references instead of the texts: far smaller than inline ones
    assert mean["ours"]["median"] < mean["baselines"]["inline"]["median"]
    assert last["ours"]["median"] < last["baselines"]["inline"]["median"]
    assert throughput["metric"] == "output_tokens_per_s"


def test_adaptive_smoke(tmp_path):
    results = run_smoke("adaptive.py", tmp_path, positive=False)  # 429s and errors may be none
    by_name = {entry["name"]: entry for entry in results}
    assert set(by_name) == {
        "auto_throughput",
        "auto_latency",
        "auto_rate_limit_sent",
        "auto_rate_limit_errors",
        "auto_rate_limit_429s",
        "auto_rate_limit_throughput",
        "auto_follows_halving",
    }
    throughput = by_name["auto_throughput"]
    assert throughput["ours"]["median"] > 0
    assert set(throughput["ratios"]) == {"best_fixed"}
    assert f"fixed_{throughput['params']['best_fixed']}" in throughput["baselines"]
    document = json.loads((tmp_path / "adaptive.json").read_text())
    assert all(run["history"] for run in document["auto_runs"])  # the limit over time, for the plot


@pytest.mark.skipif(
    not (BENCHMARKS / ".venv-fair-matrix" / "bin" / "python").exists(),
    reason="fair-matrix's own environment is not set up (benchmarks/setup_fair_matrix.sh; tox -e bench does it)",
)
def test_fair_matrix_vs_ours_smoke(tmp_path):
    [entry] = run_smoke("fair_matrix_vs_ours.py", tmp_path)
    assert set(entry["ratios"]) == {"fair_matrix"}
    assert '"agreement": 1.0' in entry["notes"]  # both held the scripted conversations to agreement
