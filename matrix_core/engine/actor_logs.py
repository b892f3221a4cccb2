"""Actors' warnings and errors, brought to the user: each actor process buffers its WARNING+ log records, the
driver takes them with the stats it polls anyway (no Ray call per record), shows a few and keeps all in a file.

Ray's own forwarding of worker output is off (``log_to_driver=False``: it would print every actor's stray lines
under the progress display); this forwards only what a user must see, rate-limited and redacted."""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from matrix_core.errors import first_line
from matrix_core.redaction import redact_value

BUFFERED = 10_000
"""Records an actor keeps between two polls; beyond that the oldest are counted, not kept."""


@dataclass(frozen=True)
class ActorLogLine:
    """One WARNING+ record of an actor: ``line`` for the screen, ``detail`` (with any traceback) for the file."""

    line: str
    detail: str


class _Buffer(logging.Handler):
    def __init__(self, label: str) -> None:
        super().__init__(logging.WARNING)
        self.label = label
        self.records: deque[ActorLogLine] = deque(maxlen=BUFFERED)
        self.lost = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call must not break the actor
            message = str(record.msg)
        line = f"{self.label}: {record.levelname.lower()}: {first_line(message)}"
        detail = f"{self.label}: {record.levelname} {record.name}: {message}"
        if record.exc_info:
            detail += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if len(self.records) == BUFFERED:
            self.lost += 1
        self.records.append(ActorLogLine(line, detail))


_buffer: _Buffer | None = None


def capture(label: str) -> None:
    """Buffer this process's WARNING+ log records, each named by ``label`` (an actor's role and number)."""
    global _buffer
    if _buffer is None:
        _buffer = _Buffer(label)
        logging.getLogger().addHandler(_buffer)
    _buffer.label = label


def take() -> list[ActorLogLine]:
    """The records buffered since the last call (each actor process has one buffer)."""
    if _buffer is None:
        return []
    taken = list(_buffer.records)
    _buffer.records.clear()
    if _buffer.lost:
        taken.append(ActorLogLine(f"{_buffer.label}: {_buffer.lost} more warnings lost", ""))
        _buffer.lost = 0
    return taken


class LogRelay:
    """Shows actors' lines through ``show`` (at most ``burst`` per ``window_s``, then how many more there were) and
    appends every one, with its traceback, to ``path``; all redacted."""

    def __init__(self, show: Callable[[str], None], path: Path, burst: int = 5, window_s: float = 10.0) -> None:
        self.show = show
        self.path = path
        self.burst = burst
        self.window_s = window_s
        self._window_start = time.monotonic()
        self._shown = 0
        self._held_back = 0
        self._file: IO[str] | None = None

    def relay(self, lines: Iterable[ActorLogLine]) -> None:
        """Show and keep ``lines``."""
        self._roll()
        for entry in lines:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(redact_value(entry.detail or entry.line) + "\n")
            if self._shown < self.burst:
                self._shown += 1
                self.show(redact_value(entry.line))
            else:
                self._held_back += 1
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Say how many lines were not shown, and close the file."""
        self._say_held_back()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _roll(self) -> None:
        if time.monotonic() - self._window_start >= self.window_s:
            self._say_held_back()
            self._window_start = time.monotonic()
            self._shown = 0

    def _say_held_back(self) -> None:
        if self._held_back:
            self.show(f"{self._held_back} more warnings in {self.path}")
            self._held_back = 0
