"""The interface of output writers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar


class Sink(ABC):
    """Writes one record per finished task, durably, so that a crash loses at most the record being written.

    ``suffix`` is the file extension the sink writes (``.jsonl``).
    """

    suffix: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def finished_ids(self) -> Iterator[str]:
        """Ids of the records already in the file (for ``--resume``), recovering from a torn last record."""

    @abstractmethod
    def write(self, record: dict[str, Any]) -> None:
        """Append one record and make it durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close the file."""
