"""One inference server replica: a Ray actor that runs vLLM's or SGLang's OpenAI-compatible server as a
subprocess.

The actor holds the replica's resources (its GPUs: Ray sets ``CUDA_VISIBLE_DEVICES`` for it, and the server inherits
it), picks a free port, starts the server, polls its health until it answers, and reports its endpoint. Clients hold
leases on it: without ``keep_alive`` the replica stops once its last client lets go, or once no client has renewed
its lease for ``idle_stop_s`` (a run whose agents were killed). A server that dies takes its actor down with it, so
that Ray restarts the replica (``max_restarts``) with a fresh server.

Closed by default: the server listens on 127.0.0.1 when the Ray cluster is one node (else on its node's address), and
each start gets a fresh key (:func:`secrets.token_urlsafe`) that reaches the server through its environment or a
0600 file, never its command line, and reaches clients in the :class:`Endpoint` Ray hands them. Its log and key file
live in a private directory (``mkdtemp``, 0700); a log file is never opened through a symbolic link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import random
import secrets
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matrix_core.backends.base import BackendError
from matrix_core.config import REDACTED, is_secret
from matrix_core.private_files import write_private

logger = logging.getLogger(__name__)

HEALTH_POLL_S = 0.5
WATCH_S = 0.5
STOP_GRACE_S = 15.0
HOST, PORT = "{host}", "{port}"
"""Placeholders in a server's arguments that the actor fills in with the address it chose."""
LOOPBACK = "127.0.0.1"
KEY_BYTES = 32


@dataclass(frozen=True)
class ServerSpec:
    """What a server replica runs and how it checks it, built by the client from ``backend.*``."""

    backend_type: str
    """The backend's name (``vllm``), for messages."""
    module: str
    """The server's Python module, run as ``<python> -m module`` unless ``command`` is given."""
    command: tuple[str, ...]
    """The server's executable and leading arguments (``backend.server_command``); empty: ``module``."""
    args: tuple[str, ...]
    """The server's arguments, with :data:`HOST` and :data:`PORT` where the address goes."""
    host: str | None
    """The address to listen on; None: :func:`listen_host` (127.0.0.1 on a one-node Ray cluster)."""
    port_min: int
    port_max: int
    health_timeout_s: float
    idle_stop_s: float
    log_dir: str | None = None
    """Where the server's log goes (``backend.log_dir``); None: the replica's private directory."""
    key_env: str | None = None
    """The environment variable the server reads its API key from (vLLM: ``VLLM_API_KEY``)."""
    key_config: str | None = None
    """Else the key's name in a YAML file the server reads with ``--config FILE`` (SGLang: ``api-key``)."""


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
    node_id: str
    """The Ray node the server runs on (a loopback ``host`` is reachable from there only)."""
    api_key: str = field(repr=False)
    """The key the server requires; it travels to clients only inside Ray (never shown by :meth:`describe`)."""


class ServerReplica:
    """A replica of an inference server: its server subprocess, its health, its clients' leases."""

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

    async def ready(self, client: str, keep_alive: bool = False) -> Endpoint:
        """Start the server unless it runs, wait until it is healthy, take a lease for ``client`` and return the
        endpoint, its key included. ``keep_alive`` from any client keeps the replica up for good."""
        if self.process is not None and self.process.poll() is not None and self.endpoint is not None:
            self._die()  # the server is gone: let Ray restart this replica; the caller's retry reaches the new one
        self.keep_alive |= keep_alive
        self.renew(client)
        if self.starting is None:
            self.starting = asyncio.ensure_future(self._start())
        if self.watcher is None:
            self.watcher = asyncio.ensure_future(self._watch())
        return await asyncio.shield(self.starting)

    def renew(self, client: str) -> None:
        """Keep ``client``'s lease."""
        self.leases[client] = time.monotonic()
        self.had_clients = True

    def release(self, client: str) -> None:
        """Drop ``client``'s lease: the replica stops now if it was the last one (unless kept alive)."""
        self.leases.pop(client, None)

    def describe(self) -> dict[str, Any] | None:
        """The endpoint once running (None before; its key left out), the clients holding leases, and whether it is
        kept alive."""
        if self.endpoint is None:
            return None
        shown = {key: value for key, value in asdict(self.endpoint).items() if key != "api_key"}
        return {**shown, "clients": len(self.leases), "keep_alive": self.keep_alive}

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
        key = secrets.token_urlsafe(KEY_BYTES)
        env = dict(os.environ)
        private: Path | None = None
        key_file: Path | None = None
        try:
            host = spec.host or await asyncio.to_thread(listen_host)
            port = free_port(host, spec.port_min, spec.port_max)
            prefix = list(spec.command) or [sys.executable, "-m", spec.module]
            command = [*prefix, *(host if arg == HOST else str(port) if arg == PORT else arg for arg in spec.args)]
            if spec.key_config or not spec.log_dir:
                private = Path(tempfile.mkdtemp(prefix="matrix-servers-"))  # 0700, a name nobody can plant ahead
            if spec.key_env:
                env[spec.key_env] = key
            elif spec.key_config:
                assert private is not None
                key_file = private / "server-key.yaml"  # SGLang reads only .yaml files
                write_private(key_file, f"{spec.key_config}: {json.dumps(key)}\n")
                command += ["--config", str(key_file)]
            if spec.log_dir:
                log_dir = Path(spec.log_dir)
                log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            else:
                assert private is not None
                log_dir = private
            log_path = log_dir / f"{self.name}.log"
            log_fd = open_log(log_path, new=not spec.log_dir)
        except (BackendError, OSError) as error:  # a port, a directory or a file it cannot have
            self._forget_key_file(key_file, private, spec.log_dir)
            reason, hint = (str(error), error.hint) if isinstance(error, BackendError) else _os_error(error)
            self.failure = BackendError(f"backend '{spec.backend_type}': replica {self.name}: {reason}", hint=hint)
            raise self.failure from None
        shown = redact_command(command)
        logger.info("%s: starting %s", self.name, " ".join(shown))
        with os.fdopen(log_fd, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(shown)}\n".encode())
            log.flush()
            # Its own session, so that stopping it reaches the processes it starts; and it dies with this actor.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            polls = await self._wait_healthy(host, port, log_path, key)
        except BackendError as error:
            await self._stop_server()
            self.failure = error
            raise
        finally:
            self._forget_key_file(key_file, private, spec.log_dir)
        self.endpoint = Endpoint(
            base_url=f"http://{_url_host(host)}:{port}/v1",
            host=host,
            port=port,
            command=tuple(shown),
            pid=self.process.pid,
            log_path=str(log_path),
            health_polls=polls,
            gpus=os.environ.get("CUDA_VISIBLE_DEVICES"),
            node_id=ray.get_runtime_context().get_node_id(),
            api_key=key,
        )
        # Leases run from now: loading a model may take longer than idle_stop_s, and the waiting clients are not gone.
        self.leases = dict.fromkeys(self.leases, time.monotonic())
        logger.info("%s: ready at %s", self.name, self.endpoint.base_url)
        return self.endpoint

    @staticmethod
    def _forget_key_file(key_file: Path | None, private: Path | None, log_dir: str | None) -> None:
        """Remove the key file once the server has read it (or will not), and the private directory if it held
        nothing else."""
        if key_file is not None:
            key_file.unlink(missing_ok=True)
        if private is not None and log_dir:
            with contextlib.suppress(OSError):
                private.rmdir()

    async def _wait_healthy(self, host: str, port: int, log_path: Path, key: str) -> int:
        """Poll ``/health``, then ``/v1/models``, until both answer 200 (and a model is listed); returns the polls.
        Both carry the server's key: vLLM and SGLang leave ``/health`` open, but ``/v1/models`` requires it."""
        import aiohttp

        assert self.process is not None
        root = f"http://{_url_host(host)}:{port}"
        deadline = time.monotonic() + self.spec.health_timeout_s
        polls = 0
        timeout = aiohttp.ClientTimeout(total=5)
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise BackendError(
                        f"backend '{self.spec.backend_type}': replica {self.name}'s server exited with code {code} "
                        f"during start-up: {_last_line(log_path)}",
                        hint=f"its log is {log_path} on {host}",
                    )
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"backend '{self.spec.backend_type}': replica {self.name} was not healthy within "
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
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)


def free_port(host: str = "", low: int = 0, high: int = 0) -> int:
    """A port in ``[low, high]`` nothing listens on at ``host`` (``""``: every interface), tried in random order;
    ``low=0``: any free port."""
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


def listen_host() -> str:
    """Where a server listens when ``backend.host`` is unset: 127.0.0.1 while the Ray cluster is one node (all its
    clients are on it), else this node's address as Ray knows it (then only the key keeps others out)."""
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    return LOOPBACK if len(alive) <= 1 else ray.util.get_node_ip_address()


def open_log(path: Path, new: bool) -> int:
    """Open a server's log to append to, 0600, and return its descriptor. Never through a symbolic link (one planted
    where the log goes is refused, not followed), never another user's file; ``new``: the file must not exist yet
    (a fresh private directory)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_EXCL if new else 0)
    hint = "remove it, or set backend.log_dir to a directory only you can write to"
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP or (error.errno == errno.EEXIST and path.is_symlink()):
            raise BackendError(f"its log {path} is a symbolic link: refusing to follow it", hint=hint) from None
        raise BackendError(f"cannot open its log {path}: {error.strerror}", hint=hint) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise BackendError(f"its log {path} is not a file of this user: refusing to write to it", hint=hint)
    return fd


async def _answers(session: Any, url: str, lists_models: bool = False) -> bool:
    import aiohttp

    try:
        async with session.get(url) as response:
            if response.status != 200:
                return False
            return not lists_models or bool((await response.json()).get("data"))
    except (TimeoutError, aiohttp.ClientError, ValueError):
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


def _os_error(error: OSError) -> tuple[str, str]:
    """A start-up step's OSError as a one-line reason and a hint."""
    where = f" {error.filename}" if error.filename else ""
    hint = "check backend.log_dir and the node's temporary directory"
    return f"cannot prepare{where}: {error.strerror or error}", hint


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server is killed when the actor's process dies, however it dies (no orphaned server holding GPUs).
    SIGKILL, not SIGTERM: vLLM still loading a model was seen to outlive a SIGTERM; its engine processes watch it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _exit_for_good() -> None:
    import ray

    ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def actor_class() -> Any:
    """:class:`ServerReplica` as a Ray actor class (Ray is imported only when a server starts)."""
    import ray

    return ray.remote(ServerReplica)
