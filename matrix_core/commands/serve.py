"""``matrix serve`` (``matrix backends start``), ``matrix backends stop`` and ``matrix backends check``: inference
servers started standalone, and the start-up check of configured backends."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from matrix_core.commands.options import address_option, cluster_option, config_option, overrides_argument
from matrix_core.errors import MatrixError
from matrix_core.private_files import private_directory, write_private

WATCH_S = 2.0
STOP_POLL_S = 0.1
KEY_VARIABLE = "MATRIX_SERVER_KEY"
"""The variable `matrix serve` suggests for handing a replica's key to an `openai` backend."""


@dataclass(frozen=True)
class BackendTarget:
    """One backend config to check or serve: who uses it, its registered class and its values."""

    label: str
    cls: type
    values: dict[str, Any]

    def build(self) -> Any:
        """The backend, its config checked."""
        from matrix_core.engine.components import build_config

        return self.cls(build_config(self.cls.config_schema, self.values))


@click.command(context_settings={"show_default": True})
@config_option
@cluster_option
@address_option
@overrides_argument
def serve(config_files: tuple[str, ...], cluster: str | None, address: str | None, overrides: tuple[str, ...]) -> None:
    """Start the `vllm` or `sglang` inference servers that `backend.*` describes and keep them running.

    Prints each replica's base URL and the 0600 file holding its key (for runs with backend.type=openai), and their
    Ray names (runs on the same Ray cluster with the same backend settings reuse them, and get the keys from Ray).
    Stops them on Ctrl-C or SIGTERM; `matrix backends stop` stops them from elsewhere.
    """
    from matrix_core import config
    from matrix_core.backends.inference_server import InferenceServerBackend

    target = _backend_alone(config.sources_for(config_files, overrides))
    if not issubclass(target.cls, InferenceServerBackend):
        kind = target.values["type"]
        raise click.UsageError(
            f"matrix serve starts inference servers on Ray (backend.type=vllm or sglang), not {kind}"
        )
    backend = target.build()
    backend.config.keep_alive = True
    with connected_ray(cluster, address) as ray_address:
        endpoints = asyncio.run(_start(backend))
        names = backend.actor_names()
        pairs = zip(names, endpoints, strict=True)
        key_files = [write_key_file(name, key) for name, (_, key) in pairs]
        with _stop_signals() as stop:  # from here Ctrl-C stops the servers, wherever the main thread is
            click.echo(
                f"Serving {backend.config.model} with {backend.backend_type} on {len(names)} replicas "
                f"(Ray at {ray_address}):"
            )
            for name, (base_url, _), key_file in zip(names, endpoints, key_files, strict=True):
                click.echo(f"  {name}  {base_url}  key in {key_file}")
            click.echo(f'Use one:  export {KEY_VARIABLE}="$(cat {key_files[0]})"')
            click.echo(
                f"          matrix run ... backend.type=openai backend.base_url={endpoints[0][0]} "
                f"backend.api_key_env={KEY_VARIABLE}"
            )
            click.echo(f"Stop:     Ctrl-C, or matrix backends stop --address {ray_address}")
            if _wait_until_stopped(names, stop):
                click.echo(f"Stopped {len(stop_servers(names))} server replicas.")
            else:
                click.echo("The servers were stopped.")


@click.command("stop")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@cluster_option
@click.option(
    "--address", default="auto", show_default=True, help="The Ray cluster: HOST:PORT, ray://HOST:PORT or auto."
)
def stop(names: tuple[str, ...], cluster: str | None, address: str) -> None:
    """Stop inference server replicas on a Ray cluster: all of them, or those whose names start with NAME."""
    from matrix_core.backends.inference_server import NAMESPACE

    with connected_ray(cluster, None if cluster else address):
        import ray

        running = sorted(
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == NAMESPACE
        )
        chosen = [name for name in running if not names or name.startswith(names)]
        stopped = stop_servers(chosen)
    click.echo(f"Stopped {len(stopped)} server replicas" + (": " + ", ".join(stopped) if stopped else "."))


@click.command("check")
@click.option(
    "-w", "--workflow", help="Check every role's backend of this workflow (default: the config's `workflow`)."
)
@config_option
@cluster_option
@address_option
@overrides_argument
def check(
    workflow: str | None,
    config_files: tuple[str, ...],
    cluster: str | None,
    address: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Run only the start-up check of the configured backends: one line each, `ok` or why not.

    Without a workflow, checks `backend.*`; with one, each role's backend (`agents.<role>.backend` included).
    Inference servers (vllm, sglang) are started, checked and let go.
    """
    from matrix_core import config

    targets = _targets(workflow, config.sources_for(config_files, overrides))
    with connected_ray(cluster, address):
        results = [asyncio.run(_check(target)) for target in targets]
    for ok, line in results:
        click.echo(("ok     " if ok else "failed ") + line)
    if not all(ok for ok, _ in results):
        raise click.exceptions.Exit(1)


@contextlib.contextmanager
def connected_ray(cluster: str | None, address: str | None) -> Iterator[str]:
    """Ray for a command: the one this process is connected to already, else the cluster or address given (as for
    `matrix run`), else a private local Ray on loopback that ends with the command. Yields the cluster's address."""
    import ray

    if ray.is_initialized():
        yield ray.get_runtime_context().gcs_address
        return
    from matrix_core.cluster.connect import RayTarget

    with RayTarget.resolve(cluster, address).connected():
        yield ray.get_runtime_context().gcs_address


def stop_servers(names: Sequence[str]) -> list[str]:
    """Stop the named server replicas (their servers, then their actors, for good) and remove the key files
    `matrix serve` left for them here; returns those stopped."""
    import ray
    from ray.exceptions import RayActorError

    from matrix_core.backends.inference_server import NAMESPACE

    stopped = []
    for name in names:
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue  # stopped already
        with contextlib.suppress(RayActorError):  # it may end before its answer leaves
            ray.get(actor.stop.remote())
        stopped.append(name)
    for name in names:
        (keys_dir() / f"{name}.key").unlink(missing_ok=True)
    return stopped


def keys_dir() -> Path:
    """Where `matrix serve` leaves the replicas' keys: ``$MATRIX_HOME/servers`` (``~/.matrix/servers``)."""
    from matrix_core.cluster.state import matrix_home

    return matrix_home() / "servers"


def write_key_file(name: str, key: str) -> Path:
    """Write replica ``name``'s key to ``<keys_dir>/<name>.key``, 0600 in a 0700 directory of this user, and
    return its path. The file is written aside and renamed into place: a link planted there is replaced, not
    followed."""
    directory = keys_dir()
    private_directory(directory)
    path = directory / f"{name}.key"
    write_private(path, key + "\n")
    return path


@dataclass
class _StopRequest:
    """Set by Ctrl-C or SIGTERM (a plain flag: a signal handler may not take the locks a threading.Event takes)."""

    requested: bool = False


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopRequest]:
    """A flag that Ctrl-C or SIGTERM sets while the block runs, instead of a KeyboardInterrupt raised wherever the
    main thread happens to be (inside Ray's client, or between two lines); the handlers before are put back after."""
    stop = _StopRequest()

    def request(signum: int, frame: Any) -> None:
        stop.requested = True

    previous = {number: signal.signal(number, request) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _wait_until_stopped(names: Sequence[str], stop: _StopRequest) -> bool:
    """Wait until ``stop`` is requested (True) or none of the named replicas is left (False: ``matrix backends
    stop``, or restarts spent)."""
    import ray

    from matrix_core.backends.inference_server import NAMESPACE

    while not stop.requested:
        alive = {
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["namespace"] == NAMESPACE
        }
        if not alive & set(names):
            return False
        looked = time.monotonic()
        while not stop.requested and time.monotonic() - looked < WATCH_S:
            time.sleep(STOP_POLL_S)
    return True


async def _start(backend: Any) -> list[tuple[str, str]]:
    """Start the inference servers and return each replica's base URL and key."""
    await backend.start()
    try:
        return [(replica.base_url, replica.api_key) for replica in backend.replicas if replica.up]
    finally:
        await backend.close()  # kept alive: letting go does not stop them


async def _check(target: BackendTarget) -> tuple[bool, str]:
    """Build the backend, start it, let it go: ``(ok, line)``."""
    try:
        backend = target.build()
        await backend.start()
    except MatrixError as error:
        hint = f" (hint: {error.hint})" if error.hint else ""
        return False, f"{target.label}: {target.values['type']}: {error}{hint}"
    try:
        return True, f"{target.label}: {_describe(target, backend)}"
    finally:
        await backend.close()


def _describe(target: BackendTarget, backend: Any) -> str:
    values = target.values
    parts = [values["type"]]
    if values.get("model"):
        parts.append(values["model"])
    endpoints = getattr(backend, "endpoints", None)
    if callable(endpoints):
        parts.append("at " + ", ".join(str(url) for url in endpoints()))
    elif values.get("base_url"):
        parts.append(f"at {values['base_url']}")
    return " ".join(parts)


# --- which backends -------------------------------------------------------------------------------------------


def _targets(workflow: str | None, sources: Sequence[Any]) -> list[BackendTarget]:
    """Each role's backend of ``workflow`` (roles with the same settings together), else ``backend.*`` alone; both
    resolved and checked as ``matrix run`` resolves them."""
    from omegaconf import OmegaConf

    from matrix_core import config
    from matrix_core.plugins import load_plugins

    for source in reversed(sources):
        if workflow is None:
            workflow = OmegaConf.select(source.data, "workflow", default=None)
    if workflow is None:
        return [_backend_alone(sources)]
    registry = load_plugins().registry
    resolved = config.resolve(registry.get("orchestrators", workflow), registry, sources)
    grouped: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for role, section in resolved.role_backends.items():
        values = OmegaConf.to_container(section, resolve=True, enum_to_str=True)
        roles, _ = grouped.setdefault(repr(sorted(values.items())), ([], values))
        roles.append(role)
    return [
        BackendTarget(f"{workflow} ({', '.join(roles)})", registry.get("backends", values["type"]).cls, values)
        for roles, values in grouped.values()
    ]


def _backend_alone(sources: Sequence[Any]) -> BackendTarget:
    """``backend.*`` from the sources (other sections are not looked at), resolved by
    :func:`matrix_core.config.resolve_backend`."""
    from omegaconf import OmegaConf

    from matrix_core import config
    from matrix_core.plugins import load_plugins

    registry = load_plugins().registry
    values = OmegaConf.to_container(config.resolve_backend(registry, sources), resolve=True, enum_to_str=True)
    return BackendTarget("backend", registry.get("backends", values["type"]).cls, values)
