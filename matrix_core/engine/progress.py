"""What the user sees while a run goes: a rich live display on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


class ProgressDisplay:
    """Shows tasks done / in flight / failed, tasks/s, tokens/s, elapsed and (with a known total) ETA."""

    def __init__(self, workflow: str, total: int | None, quiet: bool, log_every_s: float = 10.0) -> None:
        self.total = total
        self.quiet = quiet
        self.log_every_s = log_every_s
        self._last_log = time.monotonic()
        self._live = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._live = Progress(
                TextColumn(f"[bold]{workflow}"),
                BarColumn(),
                TextColumn("{task.completed} done"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._task = self._live.add_task(workflow, total=total, stats="")
            self._live.start()

    def update(self, progress: dict[str, Any], in_flight: int, limits: Sequence[str] = ()) -> None:
        """Show the writer's latest counts, the cost so far where backends are priced, and each limited server's
        limit now (``run.max_concurrency=auto``)."""
        elapsed = max(progress["elapsed_s"], 1e-9)
        stats = (
            f"{in_flight} in flight, {progress['failed']} failed, "
            f"{_rate(progress['done'] / elapsed)}, {progress['tokens'] / elapsed:.0f} tokens/s"
        )
        if progress.get("cost") is not None:
            stats += f", cost {progress['cost']:.4g}"
        if limits:
            stats += "; " + "; ".join(limits)
        if self._live is not None:
            self._live.update(self._task, completed=progress["done"], stats=stats)
        elif not self.quiet and time.monotonic() - self._last_log >= self.log_every_s:
            self._last_log = time.monotonic()
            logger.info("%d done, %s", progress["done"], stats)

    def note(self, line: str) -> None:
        """Say something the user should know about the run, once, above the live display (or as a log line)."""
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            logger.warning("%s", line)

    def close(self) -> None:
        """Stop the live display."""
        if self._live is not None:
            self._live.stop()


def _rate(per_second: float) -> str:
    """Tasks per second, or per minute when fewer than one a second: a slow run never reads ``0.0 tasks/s``."""
    return f"{per_second:.1f} tasks/s" if per_second >= 1 else f"{per_second * 60:.1f} tasks/min"
