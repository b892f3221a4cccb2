"""Where a run's Ray is: a private local Ray (the default, started and stopped by the run), an existing Ray at an
address (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``), or a cluster Matrix started (``--cluster NAME``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from matrix_core.cluster.state import ClusterError, ClusterState, load
from matrix_core.errors import UsageError

logger = logging.getLogger(__name__)


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
        """Start or join Ray for this process; a cluster that cannot be reached is a one-line error."""
        self.apply_env()
        import ray

        options: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if self.runtime_env:
            options["runtime_env"] = dict(self.runtime_env)
        if self.address is None:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a private Ray stays on loopback
            ray.init(address="local", include_dashboard=False, **options)
            return
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError) as error:
            raise ClusterError(
                f"cannot reach Ray at {self.address}: {str(error).splitlines()[0]}",
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
        raise UsageError(f"--runtime-env {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--runtime-env {path}: expected a mapping (pip, working_dir, env_vars, ...)")
    return value
