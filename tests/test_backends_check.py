"""`matrix backends check`: only the start-up check of the configured backends, one line each."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer

STANDIN = [sys.executable, "-m", "matrix_core.testing.server_standin"]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(models=["fake-model", "other"]).in_thread() as running:
        yield running


def check(*arguments: str):
    return CliRunner().invoke(cli, ["backends", "check", *arguments])


def test_a_reachable_server_serving_the_model_is_ok(ray_session, server):
    result = check("backend.type=openai", f"backend.base_url={server.base_url}", "backend.model=other")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok     backend: openai other at {server.base_url}\n"
    # The check is the backend's own start-up check: it listed the server's models, and sent no chat.
    assert [request.path for request in server.requests][-1] == "/v1/models"
    assert server.stats()["requests"] == 0


def test_each_failure_is_one_line_and_the_exit_code_says_so(ray_session, server, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "workflow: inference\n"
        f"backend:\n  type: openai\n  base_url: {server.base_url}\n  model: no-such-model\n"
        "agents:\n  model:\n    backend:\n      base_url: http://127.0.0.1:9/v1\n"
    )
    result = check("-c", str(config))
    assert result.exit_code == 1
    [line] = result.stdout.splitlines()  # one role, with its own backend section
    assert line == (
        "failed inference (model): openai: http://127.0.0.1:9/v1: Connection error. "
        "(hint: is the server running, and is backend.base_url right?)"
    )
    result = check("-w", "inference", "backend.type=openai", f"backend.base_url={server.base_url}", "backend.model=x")
    assert result.exit_code == 1
    assert result.stdout.startswith(f"failed inference (model): openai: {server.base_url} does not serve model 'x'")


def test_a_bad_config_is_a_usage_error_naming_file_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("backend:\n  type: openai\n  timeout_s: soon\n")
    result = check("-c", str(config))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {config}:3: backend.timeout_s: Value 'soon' of type 'str' could not be")
    result = check("backend.type=nope")
    assert result.exit_code == 2 and "unknown backend 'nope'" in result.output


def test_inference_servers_are_started_checked_and_let_go(ray_session):
    result = check(
        "backend.type=sglang", "backend.model=org/tiny", "backend.replicas=2", "backend.num_gpus=0",
        "backend.num_cpus=0", f"backend.server_command={json.dumps(STANDIN)}", "backend.host=127.0.0.1",
        "backend.port_min=0", "backend.engine_args.matrix_test_case=check",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok     backend: sglang org/tiny at http://127.0.0.1:")
    assert result.stdout.count("http://127.0.0.1:") == 2
    failed = check(
        "backend.type=sglang", "backend.model=org/tiny", "backend.num_gpus=0", "backend.num_cpus=0",
        f"backend.server_command={json.dumps(STANDIN)}", "backend.host=127.0.0.1", "backend.port_min=0",
        "backend.engine_args.standin_fail_start='OSError: org/tiny is not a model'",
    )  # fmt: skip
    assert failed.exit_code == 1
    assert "failed backend: sglang: backend 'sglang': replica matrix-sglang-" in failed.stdout
    assert "exited with code 3 during start-up: OSError: org/tiny is not a model (hint: its log is " in failed.stdout


def test_a_check_of_kept_alive_servers_gets_their_keys_from_ray(ray_session):
    import ray

    from matrix_core.backends.inference_server import NAMESPACE
    from matrix_core.backends.sglang import SGLangBackend, SGLangConfig
    from matrix_core.commands.serve import stop_servers

    settings = {
        "type": "sglang", "model": "org/tiny", "num_gpus": 0, "num_cpus": 0, "server_command": STANDIN,
        "host": "127.0.0.1", "port_min": 0, "keep_alive": True, "engine_args": {"matrix_test_case": "kept"},
    }  # fmt: skip
    overrides = [f"backend.{key}={json.dumps(value)}" for key, value in settings.items() if key != "engine_args"]
    overrides.append("backend.engine_args.matrix_test_case=kept")
    [name] = SGLangBackend(SGLangConfig(**settings)).actor_names()
    try:
        first = check(*overrides)  # starts the server and leaves it running
        again = check(*overrides)  # attaches to it: its key comes from the replica, through Ray
        assert first.exit_code == 0 and again.exit_code == 0, again.output
        assert again.stdout == first.stdout
        endpoint = ray.get(ray.get_actor(name, namespace=NAMESPACE).ready.remote("test", False))
        assert endpoint.base_url in again.stdout and endpoint.api_key not in first.output + again.output
    finally:
        stop_servers([name])
