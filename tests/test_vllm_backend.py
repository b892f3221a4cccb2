"""The ``vllm`` backend's launch plan, and its start on Ray with a stand-in engine (fast; the real vLLM runs in
tests/test_vllm_cpu.py, tox env ``vllm-cpu``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from importlib.util import find_spec

import pytest
from click.testing import CliRunner

from matrix_core.backends import Sampling
from matrix_core.backends.engine_server import HOST, PORT, redact_command
from matrix_core.backends.vllm import VLLMBackend, VLLMConfig
from matrix_core.cli import cli
from matrix_core.errors import ConfigError, MatrixError

STANDIN = [sys.executable, "-m", "matrix_core.testing.engine_standin"]


def test_launch_plan_is_vllms_command_line():
    backend = VLLMBackend(
        VLLMConfig(
            type="vllm",
            model="meta-llama/Llama-3.1-8B-Instruct",
            tensor_parallel_size=2,
            server_command=STANDIN,
            engine_args={
                "max_model_len": 4096,
                "enforce_eager": True,
                "enable_prefix_caching": False,
                "limit_mm_per_prompt": {"image": 2},
                "served_model_name": ["llama", "llama-8b"],
                "quantization": None,
            },
        )
    )
    assert backend.launch_args() == [
        "--model", "meta-llama/Llama-3.1-8B-Instruct", "--host", HOST, "--port", PORT, "--tensor-parallel-size", "2",
        "--max-model-len", "4096", "--enforce-eager", "--no-enable-prefix-caching",
        "--limit-mm-per-prompt", '{"image": 2}', "--served-model-name", "llama", "llama-8b",
    ]  # fmt: skip
    assert backend.spec().module == "vllm.entrypoints.openai.api_server"
    assert backend.actor_options()["num_gpus"] == 2
    assert backend.actor_names()[0].startswith("matrix-vllm-")


def test_engine_args_may_not_set_what_matrix_sets():
    with pytest.raises(ConfigError, match=r"^backend\.engine_args\.tensor-parallel-size: Matrix sets it itself"):
        VLLMBackend(VLLMConfig(type="vllm", model="m", server_command=STANDIN, engine_args={"tensor-parallel-size": 2}))


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_itself_is_required_unless_a_server_command_is_given():
    with pytest.raises(MatrixError, match=r"^backend 'vllm' needs vllm: run pip install 'matrix-core\[vllm\]'"):
        VLLMBackend(VLLMConfig(type="vllm", model="m"))


def test_listing_backends_imports_no_engine():
    code = (
        "import sys; from matrix_core.plugins import load_plugins; load_plugins();"
        "print(sorted(m for m in ('vllm', 'sglang') if m in sys.modules))"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
    listed = CliRunner().invoke(cli, ["backends", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    options = {row["name"]: row["options"] for row in json.loads(listed.output)}
    for name in ("vllm", "sglang"):
        assert options[name]["tensor_parallel_size"] == "int = 1"
        assert options[name]["routing"] == "ReplicaRouting = 'least_outstanding'"
        assert options[name]["engine_args"] == "dict[str, Any] = {}"


def test_a_vllm_replica_starts_on_ray_and_answers(ray_session, tmp_path):
    config = VLLMConfig(
        type="vllm",
        model="org/tiny",
        num_gpus=0,
        num_cpus=0,
        server_command=STANDIN,
        host="127.0.0.1",
        port_min=0,
        idle_stop_s=2,
        log_dir=str(tmp_path),
        engine_args={"max_model_len": 2048, "enforce_eager": True, "api_key": "sk-engine-secret"},
    )

    async def scenario() -> tuple[str, str | None]:
        backend = VLLMBackend(config)
        await backend.start()
        try:
            answer = await backend.chat([{"role": "user", "content": "hi there"}], Sampling(max_tokens=5))
            [base_url] = backend.endpoints()
            return base_url, answer.text
        finally:
            await backend.close()

    base_url, text = asyncio.run(scenario())
    assert text == "hi there hi there hi"
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/standin", timeout=10) as response:
        argv = json.load(response)["argv"]
    port = base_url.removesuffix("/v1").rsplit(":", 1)[1]
    assert argv == [
        "--model", "org/tiny", "--host", "127.0.0.1", "--port", port, "--tensor-parallel-size", "1",
        "--max-model-len", "2048", "--enforce-eager", "--api-key", "sk-engine-secret",
    ]  # fmt: skip
    [log] = tmp_path.glob("*.log")
    assert "--api-key ***" in log.read_text() and "sk-engine-secret" not in log.read_text()


def test_secret_flags_are_redacted_for_logs():
    command = ["vllm", "serve", "--api-key", "sk-1", "--hf-token=hf-2", "--port", "8000", "--tokenizer", "t"]
    assert redact_command(command) == [
        "vllm", "serve", "--api-key", "***", "--hf-token=***", "--port", "8000", "--tokenizer", "t",
    ]  # fmt: skip
