"""`matrix serve` (`matrix backends start`) and `matrix backends stop`: inference servers started standalone on a Ray
cluster, served until stopped, here with the stand-in server; each replica's key is left in a 0600 file, never
printed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import openai
import pytest
from click.testing import CliRunner
from openai import OpenAI

from matrix_core.cli import cli

STANDIN = [sys.executable, "-m", "matrix_core.testing.server_standin"]


def server_overrides(case: str) -> list[str]:
    return [
        "backend.type=sglang", "backend.model=org/tiny", "backend.replicas=2", "backend.num_gpus=0",
        "backend.num_cpus=0", f"backend.server_command={json.dumps(STANDIN)}", "backend.host=127.0.0.1",
        "backend.port_min=0", f"backend.engine_args.matrix_test_case={case}",
    ]  # fmt: skip


class Served:
    """A `matrix serve` process and the lines it printed so far."""

    def __init__(self, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "matrix_core", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: Queue[str] = Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, prefix: str, timeout: float = 90) -> list[str]:
        """The lines printed up to the first that starts with ``prefix``."""
        seen = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except Empty:
                raise AssertionError(f"`matrix serve` printed no {prefix!r}; it printed {seen}") from None
            seen.append(line)
            if line.startswith(prefix):
                return seen


@pytest.fixture
def ray_address(ray_session: int) -> str:
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture
def matrix_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A MATRIX_HOME of the test's own, for `matrix serve` and for `matrix backends stop` in this process."""
    home = tmp_path / "home"
    monkeypatch.setenv("MATRIX_HOME", str(home))
    return home


@pytest.fixture
def served(request: pytest.FixtureRequest, ray_address: str, matrix_home: Path) -> Iterator[Served]:
    serving = Served("serve", "--address", ray_address, *server_overrides(request.node.name))
    yield serving
    if serving.process.poll() is None:
        serving.process.kill()
        serving.process.wait()


def test_serve_prints_endpoints_and_key_files_that_answer_until_backends_stop(served, ray_address, matrix_home):
    lines = served.until("Stop:")
    assert lines[0].startswith("Serving org/tiny with sglang on 2 replicas (Ray at ")
    replicas = [line.strip().split("  ") for line in lines[1:3]]
    keys_dir = matrix_home / "servers"
    for name, url, key_file in replicas:
        assert name.startswith("matrix-sglang-") and url.startswith("http://127.0.0.1:")
        assert key_file == f"key in {keys_dir / name}.key"
    assert lines[3] == f'Use one:  export MATRIX_SERVER_KEY="$(cat {keys_dir / replicas[0][0]}.key)"'
    assert lines[4] == (
        f"          matrix run ... backend.type=openai backend.base_url={replicas[0][1]} "
        "backend.api_key_env=MATRIX_SERVER_KEY"
    )
    # Each key is in a file only its user can read, in a directory only its user can enter, and nowhere on screen.
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    keys = []
    for name, url, _ in replicas:
        key_file = keys_dir / f"{name}.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert len(key) >= 40 and not any(key in line for line in lines)
        keys.append(key)
        answer = OpenAI(base_url=url, api_key=key).chat.completions.create(
            model="org/tiny", messages=[{"role": "user", "content": "still there"}], max_tokens=2
        )
        assert answer.choices[0].message.content == "still there"
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=url, api_key="none", max_retries=0).models.list()
    assert keys[0] != keys[1]
    stopped = CliRunner().invoke(cli, ["backends", "stop", "--address", ray_address, replicas[0][0][:-2]])
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == f"Stopped 2 server replicas: {replicas[0][0]}, {replicas[1][0]}\n"
    assert not list(keys_dir.glob("*.key")), "stopping the servers removed their key files"
    assert served.until("The servers were stopped.")
    assert served.process.wait(timeout=30) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_what_serve_started(served, signum):
    name = served.until("Stop:")[1].split()[0]
    os.kill(served.process.pid, signum)  # at once: from the first line on, the signal is waited for, not raised
    assert served.until("Stopped 2 server replicas.")
    assert served.process.wait(timeout=30) == 0
    left = CliRunner().invoke(cli, ["backends", "stop", name[:-2]])
    assert left.stdout == "Stopped 0 server replicas.\n"


def test_serve_starts_only_inference_servers():
    result = CliRunner().invoke(cli, ["serve", "backend.type=openai", "backend.base_url=http://127.0.0.1:9/v1"])
    assert result.exit_code == 2
    assert "matrix serve starts inference servers on Ray (backend.type=vllm or sglang), not openai" in result.output
