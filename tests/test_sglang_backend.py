"""The ``sglang`` backend's launch plan, run for real on Ray with a stand-in server (SGLang cannot serve here): the
exact command line, resources, ports, health polling, routing over 2 replicas, replica death and failover, stop and
keep_alive, start-up errors, and each server's key (in a 0600 ``--config`` file, never on its command line)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from matrix_core.backends import BackendError, Sampling
from matrix_core.backends.inference_server import NAMESPACE
from matrix_core.backends.replicas import ReplicaRouting
from matrix_core.backends.server_replica import HOST, PORT, Endpoint
from matrix_core.backends.sglang import SGLangBackend, SGLangConfig
from matrix_core.cli import cli
from matrix_core.errors import ConfigError

T = TypeVar("T")
STANDIN = [sys.executable, "-m", "matrix_core.testing.server_standin"]
HELLO = [{"role": "user", "content": "hello server"}]


def standin(case: str, **options: Any) -> SGLangConfig:
    """A config that runs the stand-in on CPU; ``case`` (an ignored flag) gives each test its own servers."""
    engine_args = {"matrix_test_case": case, **options.pop("engine_args", {})}
    values: dict[str, Any] = {
        "type": "sglang",
        "model": "org/tiny-model",
        "num_gpus": 0.0,
        "num_cpus": 0,
        "server_command": STANDIN,
        "host": "127.0.0.1",
        "port_min": 0,
        "health_timeout_s": 60,
        "idle_stop_s": 2,
    }
    return SGLangConfig(**{**values, **options, "engine_args": engine_args})


def with_backend(config: SGLangConfig, scenario: Callable[[SGLangBackend], Awaitable[T]]) -> T:
    async def main() -> T:
        async with SGLangBackend(config) as backend:
            return await scenario(backend)

    return asyncio.run(main())


def get_json(url: str, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.load(response)


def standin_info(base_url: str) -> dict[str, Any]:
    return get_json(base_url.removesuffix("/v1") + "/standin")


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def replica_gone(name: str) -> bool:
    import ray

    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return True
    return False


def test_launch_plan_command_resources_and_names():
    backend = SGLangBackend(
        SGLangConfig(
            type="sglang",
            model="meta-llama/Llama-3.1-8B-Instruct",
            replicas=2,
            tensor_parallel_size=4,
            server_command=STANDIN,
            engine_args={"mem_fraction_static": 0.8, "enable_torch_compile": True, "disable_radix_cache": False},
        )
    )
    assert backend.launch_args() == [
        "--model-path", "meta-llama/Llama-3.1-8B-Instruct", "--host", HOST, "--port", PORT, "--tp", "4",
        "--mem-fraction-static", "0.8", "--enable-torch-compile",
    ]  # fmt: skip
    assert backend.spec().module == "sglang.launch_server"
    assert backend.actor_options() == {
        "num_gpus": 4,
        "num_cpus": 1.0,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "max_restarts": 3,
        "max_task_retries": -1,
        "max_concurrency": 1000,
        "get_if_exists": True,
    }
    names = backend.actor_names()
    assert len(names) == 2 and names[0].startswith("matrix-sglang-") and names[0].endswith("-0")
    # Client-side options do not change which servers are shared; server settings do.
    same = SGLangBackend(SGLangConfig(**{**backend.config.__dict__, "routing": ReplicaRouting.sticky, "timeout_s": 5}))
    assert same.actor_names() == names
    other = SGLangBackend(SGLangConfig(**{**backend.config.__dict__, "tensor_parallel_size": 2}))
    assert other.actor_names()[0] != names[0]
    # A run's YAML says 0 where a client said 0.0: the same servers.
    assert SGLangBackend(standin("cpu", num_gpus=0)).actor_names() == SGLangBackend(standin("cpu")).actor_names()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "http://x/v1"}, "backend.base_url is set but backend 'sglang' starts its own servers"),
        ({"model": None}, "backend.model is not set"),
        ({"replicas": 0}, "backend.replicas: must be at least 1, got 0"),
        ({"engine_args": {"port": 8000}}, "backend.engine_args.port: Matrix sets it itself"),
        ({"engine_args": {"tp-size": 2}}, "backend.engine_args.tp-size: Matrix sets it itself"),
        ({"port_min": 9000, "port_max": 8000}, "backend.port_min..port_max: 9000..8000 is not a port range"),
        ({"engine_args": {"config": "mine.yaml"}}, "backend.engine_args.config: Matrix sets it itself"),
        ({"engine_args": {"api_key": "k"}}, "backend.engine_args.api_key: a secret on the server's command line"),
        ({"engine_args": {"admin_api_key": "k"}}, "backend.engine_args.admin_api_key: a secret on the server's"),
        ({"api_key": "k"}, "backend.api_key: backend 'sglang' gives each server it starts a key of its own"),
    ],
)
def test_bad_config_is_one_line(options, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        SGLangBackend(standin("bad", **options))


def test_sglang_itself_is_required_unless_a_server_command_is_given():
    with pytest.raises(Exception, match=r"backend 'sglang' needs sglang: run pip install 'matrix-core\[sglang\]'"):
        SGLangBackend(standin("missing", server_command=[]))


def test_replicas_need_gpus_the_cluster_has(ray_session):
    async def start() -> None:
        await SGLangBackend(standin("gpus", num_gpus=None, tensor_parallel_size=2)).start()

    with pytest.raises(BackendError, match=r"each replica needs 2 GPUs .* and the Ray cluster has 0") as caught:
        asyncio.run(start())
    assert "backend.num_gpus=0" in caught.value.hint


def test_two_replicas_start_after_health_and_serve_the_exact_command(ray_session):
    config = standin("start", replicas=2, engine_args={"standin_health_delay_s": 1.0, "context_length": 2048})

    async def scenario(backend: SGLangBackend) -> tuple[list[str | None], list[str | None], Any]:
        answer = await backend.chat(HELLO, Sampling(max_tokens=2))
        return backend.endpoints(), [replica.api_key for replica in backend.replicas], answer

    endpoints, keys, answer = with_backend(config, scenario)
    assert answer.text == "hello server" and answer.usage.completion_tokens == 2
    assert len(set(keys)) == 2 and all(keys), "each replica has a key of its own"
    ports = set()
    for base_url, key in zip(endpoints, keys, strict=True):
        assert base_url is not None and key is not None and base_url.startswith("http://127.0.0.1:")
        port = int(base_url.removesuffix("/v1").rsplit(":", 1)[1])
        ports.add(port)
        info = standin_info(base_url)
        *argv, config_flag, key_file = info["argv"]
        assert argv == [
            "--model-path", "org/tiny-model", "--host", "127.0.0.1", "--port", str(port), "--tp", "1",
            "--matrix-test-case", "start", "--standin-health-delay-s", "1.0", "--context-length", "2048",
        ]  # fmt: skip
        # SGLang takes its key as --api-key only: it gets it in the YAML file its --config reads, in a private
        # directory, removed once the server was healthy; the key is neither on its command line nor in its
        # environment.
        assert config_flag == "--config" and info["key_from"] == "config"
        assert Path(key_file).parent.name.startswith("matrix-servers-") and not Path(key_file).exists()
        assert key.encode() not in Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        assert key.encode() not in Path(f"/proc/{info['pid']}/environ").read_bytes()
        assert info["health_polls"] >= 2, "the replica was used before /health answered 200"
        assert get_json(base_url + "/models", key)["data"][0]["id"] == "org/tiny-model"
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_json(base_url + "/models")
        assert refused.value.code == 401
    assert len(ports) == 2
    # Without keep_alive, the replicas stop once their last client lets go.
    for name in SGLangBackend(config).actor_names():
        wait_for(lambda name=name: replica_gone(name), what=f"{name} to stop")


def test_least_outstanding_spreads_concurrent_requests(ray_session):
    config = standin("spread", replicas=2, engine_args={"standin_latency_s": 0.3})

    async def scenario(backend: SGLangBackend) -> list[int]:
        await asyncio.gather(*(backend.chat(HELLO, Sampling(max_tokens=1)) for _ in range(8)))
        return [replica.served for replica in backend.replicas]

    assert with_backend(config, scenario) == [4, 4]


def test_sticky_keeps_each_task_on_one_replica(ray_session):
    config = standin("sticky", replicas=2, routing=ReplicaRouting.sticky)

    async def scenario(backend: SGLangBackend) -> dict[str, set[int]]:
        seen: dict[str, set[int]] = {}
        for _turn in range(3):
            for task in range(12):
                before = [replica.served for replica in backend.replicas]
                await backend.chat(HELLO, Sampling(max_tokens=1), task_id=f"task-{task}")
                after = [replica.served for replica in backend.replicas]
                seen.setdefault(f"task-{task}", set()).update(i for i in range(2) if after[i] != before[i])
        return seen

    seen = with_backend(config, scenario)
    assert all(len(replicas) == 1 for replicas in seen.values()), seen
    assert set().union(*seen.values()) == {0, 1}, "sticky routing put every task on one replica"


def test_a_dead_replica_fails_over_is_restarted_then_reported(ray_session, caplog):
    import ray

    config = standin("death", replicas=2, max_restarts=1)

    async def scenario(backend: SGLangBackend) -> None:
        first = backend.endpoints()
        pid = standin_info(first[0])["pid"]
        os.kill(pid, signal.SIGKILL)  # the server crashes
        answers = [await backend.chat(HELLO, Sampling(max_tokens=1)) for _ in range(6)]
        assert all(answer.text == "hello" for answer in answers)
        assert not backend.replicas[0].up or backend.endpoints()[0] != first[0]
        # Ray restarts the replica (a new actor process, a new server) and the client takes it back.
        await asyncio.to_thread(wait_for, lambda: backend.replicas[0].up, 60, "replica 0 to come back")
        back = backend.endpoints()[0]
        assert back is not None and back != first[0] and standin_info(back)["pid"] != pid
        # Its restarts spent, a replica that dies again is reported dead; the other serves everything.
        ray.kill(backend.replicas[0].actor, no_restart=True)
        answers = await asyncio.gather(*(backend.chat(HELLO, Sampling(max_tokens=1)) for _ in range(6)))
        assert len(answers) == 6 and backend.endpoints()[0] is None
        await asyncio.to_thread(wait_for, lambda: backend.replicas[0].recovering.done(), 30, "the death to be seen")

    with caplog.at_level("WARNING", logger="matrix_core.backends.inference_server"):
        with_backend(config, scenario)
    assert "replica 0 cannot be reached" in caplog.text
    assert "replica 0 is dead and will not be restarted" in caplog.text


def test_a_server_that_fails_to_start_is_one_line_with_its_log(ray_session):
    config = standin("fails", engine_args={"standin_fail_start": "torch.OutOfMemoryError: CUDA out of memory"})
    with pytest.raises(BackendError) as caught:
        with_backend(config, lambda backend: asyncio.sleep(0))
    message = str(caught.value)
    assert "server exited with code 3 during start-up: torch.OutOfMemoryError: CUDA out of memory" in message
    assert "\n" not in message and caught.value.hint.startswith("its log is ")
    assert caught.value.hint.split()[3].endswith(".log")


def test_a_log_file_planted_as_a_symbolic_link_is_refused_not_followed(ray_session, tmp_path):
    config = standin("planted", log_dir=str(tmp_path))
    [name] = SGLangBackend(config).actor_names()
    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    (tmp_path / f"{name}.log").symlink_to(victim)
    with pytest.raises(BackendError) as caught:
        with_backend(config, lambda backend: asyncio.sleep(0))
    message = str(caught.value)
    assert message == (
        f"backend 'sglang': replica {name}: its log {tmp_path / name}.log is a symbolic link: refusing to follow it"
    )
    assert "\n" not in message and caught.value.hint.startswith("remove it, or set backend.log_dir")
    assert victim.read_text() == "another user's file\n"
    wait_for(lambda: replica_gone(name), what="the failed replica to be removed")


def test_a_log_dir_that_cannot_be_made_is_one_line(ray_session, tmp_path):
    (tmp_path / "a-file").write_text("")
    config = standin("unmade", log_dir=str(tmp_path / "a-file" / "logs"))
    [name] = SGLangBackend(config).actor_names()
    with pytest.raises(BackendError) as caught:
        with_backend(config, lambda backend: asyncio.sleep(0))
    assert str(caught.value).startswith(f"backend 'sglang': replica {name}: cannot prepare {tmp_path}/a-file/logs: ")
    assert "\n" not in str(caught.value) and "backend.log_dir" in caught.value.hint
    wait_for(lambda: replica_gone(name), what="the failed replica to be removed")


def test_a_loopback_replica_on_another_node_is_one_line(ray_session):
    import ray

    backend = SGLangBackend(standin("elsewhere"))
    endpoint = Endpoint(
        base_url="http://127.0.0.1:1/v1", host="127.0.0.1", port=1, command=(), pid=1, log_path="x.log",
        health_polls=1, gpus=None, node_id="another-node", api_key="k",
    )  # fmt: skip
    error = backend._elsewhere("matrix-sglang-x-0", endpoint)
    assert error is not None
    assert str(error) == "backend 'sglang': replica matrix-sglang-x-0 listens on 127.0.0.1 of another node"
    here = dataclasses.replace(endpoint, node_id=ray.get_runtime_context().get_node_id())
    assert backend._elsewhere("matrix-sglang-x-0", here) is None
    assert "api_key" not in repr(endpoint), "an endpoint's repr (in logs, tracebacks) leaves its key out"


def test_a_server_that_never_gets_healthy_times_out(ray_session):
    config = standin("slow", health_timeout_s=5, engine_args={"standin_health_delay_s": 600})
    with pytest.raises(BackendError, match=r"was not healthy within backend.health_timeout_s=5s: stand-in server"):
        with_backend(config, lambda backend: asyncio.sleep(0))


def test_keep_alive_outlives_its_clients_until_stopped(ray_session):
    import ray

    config = standin("keep", keep_alive=True, idle_stop_s=0.5)
    [name] = SGLangBackend(config).actor_names()
    first = with_backend(config, lambda backend: asyncio.sleep(0, backend.endpoints()))
    time.sleep(2)  # several idle periods: a replica that is not kept alive would have stopped
    assert not replica_gone(name)
    # A later client reuses the same server by name.
    assert with_backend(config, lambda backend: asyncio.sleep(0, backend.endpoints())) == first
    actor = ray.get_actor(name, namespace=NAMESPACE)
    assert ray.get(actor.describe.remote())["keep_alive"] is True
    with contextlib.suppress(ray.exceptions.RayActorError):  # it may end before its answer leaves
        ray.get(actor.stop.remote())
    wait_for(lambda: replica_gone(name), what="the server to stop")


def test_matrix_run_on_sglang_replicas(ray_session, tmp_path):
    rows = [{"id": f"q{i}", "text": f"question {i}"} for i in range(12)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    overrides = [
        "backend.type=sglang", "backend.model=org/tiny-model", "backend.replicas=2", "backend.num_gpus=0",
        "backend.num_cpus=0", f"backend.server_command={json.dumps(STANDIN)}", "backend.host=127.0.0.1",
        "backend.port_min=0", "backend.idle_stop_s=2", "backend.routing=sticky",
        "backend.engine_args.matrix_test_case=run", "agents.model.replicas=2",
    ]  # fmt: skip
    arguments = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(output), "-q", *overrides]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == sorted(row["id"] for row in rows)
    assert all(record["status"] == "success" for record in records)
    # The run's agents were its only clients: the servers stop after it.
    config = standin("run", replicas=2, routing=ReplicaRouting.sticky, idle_stop_s=2)
    for name in SGLangBackend(config).actor_names():
        wait_for(lambda name=name: replica_gone(name), what=f"{name} to stop after the run")
