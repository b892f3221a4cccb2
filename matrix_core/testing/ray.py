"""A private local Ray for tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


@contextmanager
def local_ray(import_paths: Sequence[str] = (), num_cpus: int = 2) -> Iterator[int]:
    """Start a private local Ray on loopback, with ``import_paths`` importable in its workers (test modules that
    define workflows); yields the port where Ray exports its metrics for Prometheus. Never use ``ray stop`` in
    tests: it kills every Ray on the machine."""
    # Bind Ray's services to 127.0.0.1: Ray reads this when first imported (matrix_core's import set it already).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    # Ray workers inherit the environment, not the test runner's sys.path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [*import_paths, os.environ.get("PYTHONPATH")]))
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _metrics_export_port=metrics_port,
    )
    try:
        yield metrics_port
    finally:
        ray.shutdown()
