"""One engine replica: a Ray actor that runs an engine's OpenAI-compatible server (vLLM, SGLang) as a subprocess.

The actor holds the replica's resources (its GPUs: Ray sets ``CUDA_VISIBLE_DEVICES`` for it, and the server inherits
it), picks a free port, starts the server, polls its health until it answers, and reports its endpoint. Clients hold
leases on it: without ``keep_alive`` the replica stops once its last client lets go, or once no client has renewed
its lease for ``idle_stop_s`` (a run whose agents were killed). A server that dies takes its actor down with it, so
that Ray restarts the replica (``max_restarts``) with a fresh server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matrix_core.backends.base import BackendError
from matrix_core.config import REDACTED, is_secret

logger = logging.getLogger(__name__)

HEALTH_POLL_S = 0.5
WATCH_S = 0.5
STOP_GRACE_S = 15.0
HOST, PORT = "{host}", "{port}"
"""Placeholders in a server's arguments that the actor fills in with the address it chose."""


@dataclass(frozen=True)
class ServerSpec:
    """What an engine actor runs and how it checks it, built by the client from ``backend.*``."""

    engine: str
    """The backend's name (``vllm``), for messages."""
    module: str
    """The server's Python module, run as ``<python> -m module`` unless ``command`` is given."""
    command: tuple[str, ...]
    """The server's executable and leading arguments (``backend.server_command``); empty: the engine's module."""
    args: tuple[str, ...]
    """The server's arguments, with :data:`HOST` and :data:`PORT` where the address goes."""
    host: str | None
    """The address to listen on; None: the node's address as Ray knows it."""
    port_min: int
    port_max: int
    health_timeout_s: float
    idle_stop_s: float
    log_dir: str


@dataclass(frozen=True)
class Endpoint:
    """A running replica: where to reach it and how it was started."""

    base_url: str
    host: str
    port: int
    command: tuple[str, ...]
    """The server's command line, secret flags' values shown as ``***``."""
    pid: int
    log_path: str
    health_polls: int
    gpus: str | None
    """``CUDA_VISIBLE_DEVICES`` as Ray set it for this replica (None: unset)."""


class EngineServer:
    """A replica of an engine: its server subprocess, its health, its clients' leases."""

    def __init__(self, name: str, spec: ServerSpec) -> None:
        self.name = name
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint: Endpoint | None = None
        self.failure: BackendError | None = None
        self.starting: asyncio.Task[Endpoint] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.leases: dict[str, float] = {}
        self.keep_alive = False
        self.had_clients = False
        self.stopping = False

    async def ready(self, client: str, keep_alive: bool = False) -> dict[str, Any]:
        """Start the server unless it runs, wait until it is healthy, take a lease for ``client`` and return the
        endpoint (an :class:`Endpoint` as a dict). ``keep_alive`` from any client keeps the replica up for good."""
        if self.process is not None and self.process.poll() is not None and self.endpoint is not None:
            self._die()  # the server is gone: let Ray restart this replica; the caller's retry reaches the new one
        self.keep_alive |= keep_alive
        self.renew(client)
        if self.starting is None:
            self.starting = asyncio.ensure_future(self._start())
        if self.watcher is None:
            self.watcher = asyncio.ensure_future(self._watch())
        endpoint = await asyncio.shield(self.starting)
        return asdict(endpoint)

    def renew(self, client: str) -> None:
        """Keep ``client``'s lease."""
        self.leases[client] = time.monotonic()
        self.had_clients = True

    def release(self, client: str) -> None:
        """Drop ``client``'s lease: the replica stops now if it was the last one (unless kept alive)."""
        self.leases.pop(client, None)

    def describe(self) -> dict[str, Any] | None:
        """The endpoint once running (None before), the clients holding leases, and whether it is kept alive."""
        if self.endpoint is None:
            return None
        return {**asdict(self.endpoint), "clients": len(self.leases), "keep_alive": self.keep_alive}

    async def stop(self) -> None:
        """Stop the server and end this actor for good (no restart)."""
        await self._stop_server()
        _exit_for_good()

    def ping(self) -> bool:
        """Liveness probe."""
        return True

    # --- inside the actor -----------------------------------------------------------------------------------------

    async def _start(self) -> Endpoint:
        import ray

        spec = self.spec
        host = spec.host or ray.util.get_node_ip_address()
        port = free_port(host, spec.port_min, spec.port_max)
        prefix = list(spec.command) or [sys.executable, "-m", spec.module]
        command = [*prefix, *(host if arg == HOST else str(port) if arg == PORT else arg for arg in spec.args)]
        log_dir = Path(spec.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{self.name}.log"
        shown = redact_command(command)
        logger.info("%s: starting %s", self.name, " ".join(shown))
        with log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(shown)}\n".encode())
            log.flush()
            # Its own session, so that stopping it reaches the processes it starts; and it dies with this actor.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            polls = await self._wait_healthy(host, port, log_path)
        except BackendError as error:
            await self._stop_server()
            self.failure = error
            raise
        self.endpoint = Endpoint(
            base_url=f"http://{_url_host(host)}:{port}/v1",
            host=host,
            port=port,
            command=tuple(shown),
            pid=self.process.pid,
            log_path=str(log_path),
            health_polls=polls,
            gpus=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        # Leases run from now: loading a model may take longer than idle_stop_s, and the waiting clients are not gone.
        self.leases = dict.fromkeys(self.leases, time.monotonic())
        logger.info("%s: ready at %s", self.name, self.endpoint.base_url)
        return self.endpoint

    async def _wait_healthy(self, host: str, port: int, log_path: Path) -> int:
        """Poll ``/health``, then ``/v1/models``, until both answer 200 (and a model is listed); returns the polls."""
        import aiohttp

        assert self.process is not None
        root = f"http://{_url_host(host)}:{port}"
        deadline = time.monotonic() + self.spec.health_timeout_s
        polls = 0
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise BackendError(
                        f"backend '{self.spec.engine}': replica {self.name}'s server exited with code {code} "
                        f"during start-up: {_last_line(log_path)}",
                        hint=f"its log is {log_path} on {host}",
                    )
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"backend '{self.spec.engine}': replica {self.name} was not healthy within "
                        f"backend.health_timeout_s={self.spec.health_timeout_s:g}s: {_last_line(log_path)}",
                        hint=f"its log is {log_path} on {host}",
                    )
                polls += 1
                if await _answers(session, f"{root}/health") and await _answers(session, f"{root}/v1/models", True):
                    return polls
                await asyncio.sleep(HEALTH_POLL_S)

    async def _watch(self) -> None:
        """Restart through Ray when the server dies; stop when no client holds a lease (unless kept alive)."""
        while True:
            await asyncio.sleep(WATCH_S)
            if self.stopping:
                return
            if self.endpoint is not None and self.process is not None and self.process.poll() is not None:
                self._die()
            if self.failure is not None:
                await asyncio.sleep(self.spec.idle_stop_s)  # clients arriving meanwhile hear the same failure
                _exit_for_good()  # then the next client tries afresh
                return
            if self.endpoint is None:
                continue  # still starting: its clients are waiting, not gone
            now = time.monotonic()
            self.leases = {c: t for c, t in self.leases.items() if now - t < self.spec.idle_stop_s}
            if self.had_clients and not self.leases and not self.keep_alive:
                logger.info("%s: no client left; stopping", self.name)
                await self.stop()

    def _die(self) -> None:
        assert self.process is not None
        logger.error(
            "%s: the server exited with code %s; restarting the replica (see %s)",
            self.name,
            self.process.returncode,
            self.endpoint.log_path if self.endpoint else "its log",
        )
        os._exit(1)  # an unexpected exit: Ray restarts the actor, up to max_restarts

    async def _stop_server(self) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), STOP_GRACE_S)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)


def free_port(host: str, low: int, high: int) -> int:
    """A port in ``[low, high]`` nothing listens on at ``host``, tried in random order; ``low=0``: any free port."""
    # SystemRandom: Ray's worker processes may share the random module's state, and replicas starting together on
    # one node then tried the same ports in the same order.
    candidates = [0] if low == 0 else random.SystemRandom().sample(range(low, high + 1), high - low + 1)
    for port in candidates:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise BackendError(f"no free port in {low}-{high} on {host}", hint="widen backend.port_min..backend.port_max")


async def _answers(session: Any, url: str, lists_models: bool = False) -> bool:
    import aiohttp

    try:
        async with session.get(url) as response:
            if response.status != 200:
                return False
            return not lists_models or bool((await response.json()).get("data"))
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return False


def redact_command(command: list[str]) -> list[str]:
    """``command`` with the value of every secret flag (``--api-key K``, ``--hf-token=T``) replaced by ``***``, to
    log or show: the server itself gets the real one."""
    shown: list[str] = []
    hide_next = False
    for arg in command:
        name, equals, _ = arg.partition("=")
        flag = name.startswith("--") and is_secret(name.lstrip("-").replace("-", "_"))
        if hide_next:
            shown.append(REDACTED)
        elif flag and equals:
            shown.append(f"{name}={REDACTED}")
        else:
            shown.append(arg)
        hide_next = flag and not equals and not hide_next
    return shown


def _last_line(log_path: Path) -> str:
    """The last non-empty line of the server's log, to say in one line why it failed."""
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log_path.stat().st_size - 4096))
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(the log is empty)"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server is killed when the actor's process dies, however it dies (no orphaned engine holding GPUs).
    SIGKILL, not SIGTERM: vLLM still loading a model was seen to outlive a SIGTERM; its engine processes watch it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _exit_for_good() -> None:
    import ray

    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def actor_class() -> Any:
    """:class:`EngineServer` as a Ray actor class (Ray is imported only when an engine starts)."""
    import ray

    return ray.remote(EngineServer)
