"""What Matrix remembers about the clusters it started: one directory per cluster under ``~/.matrix/clusters/``
(``MATRIX_HOME`` overrides ``~/.matrix``), holding ``cluster.json`` (written by the CLI), ``head.json`` (written by
the head once Ray is up), the auth token, the SLURM launch scripts and every node's log."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matrix_core.errors import MatrixError, UsageError
from matrix_core.private_files import private_directory, write_private
from matrix_core.redaction import redact

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOOPBACK = "127.0.0.1"


class ClusterError(MatrixError):
    """A cluster that cannot start, be reached or be stopped."""


class UnknownClusterError(UsageError):
    """A cluster name with no state under ``MATRIX_HOME``."""


def matrix_home() -> Path:
    """``$MATRIX_HOME``, else ``~/.matrix``."""
    return Path(os.environ.get("MATRIX_HOME") or Path.home() / ".matrix").expanduser()


def clusters_root() -> Path:
    """The directory holding one sub-directory per cluster."""
    return matrix_home() / "clusters"


@dataclass
class HeadInfo:
    """Where the head's services listen; written by the head itself (``head.json``) once Ray is up."""

    address: str
    """The GCS address, ``HOST:PORT``: what ``ray.init(address=...)`` and workers take."""
    client_address: str
    dashboard_url: str | None
    """Ray's dashboard, with its Jobs API (``matrix cluster start --dashboard``); ``None`` when it does not run."""
    metrics_endpoint: str
    """``HOST:PORT`` of the head's Prometheus exporter (each node has its own; see ``metrics_targets.json``)."""
    temp_dir: str
    """The head's temporary directory on its local disk (Ray's files in its ``ray/``): mode 700, a new random name
    at each start, removed when the head stops."""
    prometheus_url: str | None = None


@dataclass
class ClusterState:
    """One cluster Matrix started: its kind, the jobs or processes it owns, and (once up) its head."""

    name: str
    kind: str
    """``local`` (processes on this machine) or ``slurm`` (submitit jobs)."""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    slurm: dict[str, Any] = field(default_factory=dict)
    prometheus: bool = False
    dashboard: bool = False
    """Whether the head runs Ray's dashboard (on its own address, behind the cluster's token)."""
    metrics_host: str = LOOPBACK
    """Where the head's Prometheus listens (``--metrics-host``): this machine only, unless asked."""
    head_job: str | None = None
    """The head's SLURM job id, or for ``local`` the pid of its node process."""
    worker_jobs: list[str] = field(default_factory=list)
    stopped: str | None = None
    """When ``matrix cluster stop`` stopped it; ``None`` while it runs."""

    @property
    def directory(self) -> Path:
        return cluster_dir(self.name)

    @property
    def head(self) -> HeadInfo | None:
        """The head's addresses, once it has written them."""
        path = self.directory / "head.json"
        if not path.exists():
            return None
        return HeadInfo(**json.loads(path.read_text()))

    @property
    def token_path(self) -> Path:
        return self.directory / "auth_token"

    def ray_env(self) -> dict[str, str]:
        """Environment for a Ray process (node or driver) of this cluster: token authentication with the
        cluster's own token, which never leaves its file."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def save(self) -> None:
        """Write ``cluster.json`` atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / "cluster.json.tmp"
        temporary.write_text(json.dumps(redact(dataclasses.asdict(self)), indent=2) + "\n")
        temporary.replace(self.directory / "cluster.json")

    def to_json(self) -> dict[str, Any]:
        """Everything known about the cluster, head included, for ``--json`` output."""
        head = self.head
        return redact(
            {
                **dataclasses.asdict(self),
                "directory": str(self.directory),
                "head": dataclasses.asdict(head) if head else None,
            }
        )


def cluster_dir(name: str) -> Path:
    """The state directory of cluster ``name`` (which must be a valid name)."""
    if not NAME.match(name):
        raise UsageError(f"invalid cluster name {name!r}: use letters, digits, '.', '_' and '-' (at most 63)")
    return clusters_root() / name


def load(name: str) -> ClusterState:
    """The state of cluster ``name``; a one-line error when there is none."""
    path = cluster_dir(name) / "cluster.json"
    if not path.exists():
        known = ", ".join(state.name for state in list_clusters()) or "none"
        raise UnknownClusterError(
            f"unknown cluster {name!r} (known: {known})", hint=f"start it with `matrix cluster start {name}`"
        )
    return ClusterState(**json.loads(path.read_text()))


def list_clusters() -> list[ClusterState]:
    """Every cluster with state under ``MATRIX_HOME``, by name."""
    root = clusters_root()
    if not root.is_dir():
        return []
    return [
        ClusterState(**json.loads((entry / "cluster.json").read_text()))
        for entry in sorted(root.iterdir())
        if (entry / "cluster.json").exists()
    ]


def new_cluster(
    name: str,
    kind: str,
    slurm: dict[str, Any],
    prometheus: bool,
    *,
    dashboard: bool = False,
    metrics_host: str = LOOPBACK,
) -> ClusterState:
    """Create the state of a new cluster, with a fresh auth token; refuses a name that is running."""
    directory = cluster_dir(name)
    if (directory / "cluster.json").exists() and load(name).stopped is None:
        raise ClusterError(f"cluster {name!r} is already running", hint=f"`matrix cluster stop {name}` first")
    private_directory(directory)
    for stale in ("head.json", "metrics_targets.json"):
        (directory / stale).unlink(missing_ok=True)
    state = ClusterState(
        name=name, kind=kind, slurm=slurm, prometheus=prometheus, dashboard=dashboard, metrics_host=metrics_host
    )
    write_private(state.token_path, secrets.token_hex(32))
    state.save()
    return state
