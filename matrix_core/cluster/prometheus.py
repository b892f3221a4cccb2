"""Prometheus for a cluster: a config that scrapes every Ray node's metrics exporter, found through the list of
them that the head keeps (``metrics_targets.json``), and the command line that runs it. It serves its web UI and API
without authentication: on 127.0.0.1 unless ``matrix cluster start --metrics-host HOST`` says otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

from matrix_core.private_files import write_private

SCRAPE_INTERVAL_S = 5
EVERY_INTERFACE = ("0.0.0.0", "::", "")
"""``--metrics-host`` values that mean every interface: the URL to publish then names the node's own address."""


def write_config(directory: Path, discovery_file: Path) -> Path:
    """Write ``prometheus.yml`` into ``directory`` and return its path."""
    path = directory / "prometheus.yml"
    write_private(
        path,
        "# Written by `matrix cluster start --prometheus`: scrape every Ray node of this cluster.\n"
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL_S}s\n"
        "scrape_configs:\n"
        "  - job_name: ray\n"
        "    file_sd_configs:\n"
        f"      - files: ['{discovery_file}']\n"
        f"        refresh_interval: {SCRAPE_INTERVAL_S}s\n",
    )
    return path


def executable() -> str | None:
    """The ``prometheus`` binary on PATH (Debian's ``prometheus`` package installs it), if any."""
    return shutil.which("prometheus")


def command(config: Path, data_dir: Path, listen: str) -> list[str]:
    """Run Prometheus with ``config``, storing its data in ``data_dir``, serving on ``listen`` (``HOST:PORT``, from
    ``--metrics-host``: 127.0.0.1 unless asked)."""
    binary = executable()
    if binary is None:
        raise RuntimeError("prometheus is not on PATH (Debian: apt-get install prometheus)")
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address={listen}",
        "--storage.tsdb.retention.time=7d",
        "--log.level=warn",
    ]
