"""Where a run's Ray is: a private local Ray (the default, started and stopped by the run), an existing Ray at an
address (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``), or a cluster Matrix started (``--cluster NAME``)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from matrix_core.cluster.state import ClusterError, ClusterState, load
from matrix_core.errors import UsageError, first_line

logger = logging.getLogger(__name__)

LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""``0``: a Ray this process starts binds 127.0.0.1 only (and accepts no other node); read by Ray when imported."""
TOKEN_AUTH_SINCE = "2.52"
"""The first Ray with token authentication, the only lock on a cluster's services (GCS, dashboard, Ray Client)."""


def ray_version() -> str:
    """The installed Ray's version, read from its package metadata: importing ray here would make it read its
    authentication settings before a cluster's token environment is applied."""
    return importlib.metadata.version("ray")


def has_token_auth() -> bool:
    """Whether the installed Ray can require a token of whoever connects."""
    from packaging.version import Version

    return Version(ray_version()) >= Version(TOKEN_AUTH_SINCE)


def require_token_auth(what: str) -> None:
    """Refuse ``what`` (starting or joining a cluster) on a Ray without token authentication."""
    if not has_token_auth():
        raise ClusterError(
            f"{what} needs Ray {TOKEN_AUTH_SINCE} or later (token authentication); this is Ray {ray_version()}",
            hint=f"pip install 'ray[default]>={TOKEN_AUTH_SINCE}'",
        )


def _check_private_ray() -> None:
    """Refuse a private Ray that would listen beyond loopback unless the user asked for it; warn where it has no
    token. Ray parsed ``LOOPBACK_ONLY`` when ray was first imported in this process, into a constant that no public
    API shows: a caller who imported ray before matrix_core, with the variable unset, gets Ray's default (every
    interface)."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        if os.environ.get(LOOPBACK_ONLY) != "1":
            raise ClusterError(
                f"ray was imported before {LOOPBACK_ONLY}=0 was set: a private Ray would listen on every interface",
                hint=f"import matrix_core before ray, or set {LOOPBACK_ONLY}=0 before Python starts",
            )
        logger.warning("%s=1: this run's private Ray listens on every interface, not only 127.0.0.1", LOOPBACK_ONLY)
    if not has_token_auth():
        import ray

        logger.warning(
            "Ray %s has no token authentication (%s or later): this run's private Ray is on loopback, open to "
            "every user of this machine",
            ray.__version__,
            TOKEN_AUTH_SINCE,
        )


@dataclass(frozen=True)
class RayTarget:
    """How to ``ray.init``: ``address`` None means a private local Ray on loopback."""

    address: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    """Set in this process before connecting (the cluster's token authentication)."""
    runtime_env: Mapping[str, Any] | None = None
    """Ray's ``runtime_env`` for every actor of the run (``pip``, ``working_dir``, ``env_vars``, ...)."""

    @classmethod
    def for_cluster(cls, state: ClusterState, runtime_env: Mapping[str, Any] | None = None) -> RayTarget:
        """The running cluster ``state``."""
        head = state.head
        if state.stopped or head is None:
            raise ClusterError(f"cluster {state.name!r} is not running", hint=f"matrix cluster status {state.name}")
        return cls(head.address, state.ray_env(), runtime_env)

    @classmethod
    def resolve(
        cls, cluster: str | None, address: str | None, runtime_env: Mapping[str, Any] | None = None
    ) -> RayTarget:
        """From ``--cluster NAME`` or ``--address ADDRESS`` (at most one); neither gives a private local Ray."""
        if cluster and address:
            raise ClusterError("--cluster and --address exclude each other")
        if cluster:
            return cls.for_cluster(load(cluster), runtime_env)
        return cls(address, {}, runtime_env)

    def apply_env(self) -> None:
        """Set ``env`` in this process: before Ray is imported, since Ray reads some of it at import."""
        os.environ.update(self.env)

    def init(self) -> None:
        """Start or join Ray for this process; a cluster that cannot be reached, a Ray too old for token
        authentication (to join one) or a private Ray that would not stay on loopback is a one-line error."""
        self.apply_env()
        if self.address is None:  # matrix_core/__init__.py has set it already, unless someone removed it since
            os.environ.setdefault(LOOPBACK_ONLY, "0")
        import ray

        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.runtime_env:
            options["runtime_env"] = dict(self.runtime_env)
        if self.address is None:
            _check_private_ray()
            with _entrypoint_without_values():
                ray.init(address="local", include_dashboard=False, **options)
            return
        require_token_auth(f"joining Ray at {self.address}")
        try:
            with _entrypoint_without_values():
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError) as error:
            raise ClusterError(
                f"cannot reach Ray at {self.address}: {first_line(error)}",
                hint="check `matrix cluster status`, or RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH for a token-protected Ray",
            ) from None
        logger.info("connected to Ray at %s", self.address)

    @contextmanager
    def connected(self) -> Iterator[None]:
        """``init`` for the duration of a block, then disconnect (an existing cluster keeps running)."""
        self.init()
        import ray

        try:
            yield
        finally:
            ray.shutdown()


@contextmanager
def _entrypoint_without_values() -> Iterator[None]:
    """Ray records the driver's command line (the process's, read by ``psutil``, not ``sys.argv``) as its job's
    entrypoint, which anyone who reaches the cluster can list: have it record each ``KEY=VALUE`` as ``KEY=***``."""
    from subprocess import list2cmdline

    import psutil
    from ray._private import utils

    from matrix_core.redaction import redact_argv

    recorded = utils.get_entrypoint_name
    entrypoint = list2cmdline(redact_argv(psutil.Process().cmdline()))
    utils.get_entrypoint_name = lambda: entrypoint
    try:
        yield
    finally:
        utils.get_entrypoint_name = recorded


def load_runtime_env(path: str | None) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` from a YAML or JSON file (``--runtime-env``); None without a file."""
    if path is None:
        return None
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    try:
        value = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OmegaConfBaseException, YAMLError) as error:
        raise UsageError(f"--runtime-env {path}: {first_line(error)}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--runtime-env {path}: expected a mapping (pip, working_dir, env_vars, ...)")
    return value
