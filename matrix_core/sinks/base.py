"""The interface of output writers."""

from __future__ import annotations

import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar, NamedTuple


def companion(output: Path, name: str) -> Path:
    """``out.jsonl`` -> ``out.<name>``: a file written beside the output (``out.metrics.json``, ``out.dropped.jsonl``,
    or a workflow's own, such as tau2's results)."""
    return output.with_name(f"{output.name.removesuffix(output.suffix)}.{name}")


ID_BATCH = 1 << 16
"""Ids in a batch of :meth:`Sink.finished_id_batches`."""


class FinishedRecord(NamedTuple):
    """A record already in the output: its task's id and status (``""`` when the record has none)."""

    id: str
    status: str


class Sink(ABC):
    """Writes one record per finished task, durably, so that a crash loses at most the record being written.

    ``suffix`` is the file extension the sink writes (``.jsonl``). :meth:`finished` and :meth:`remove` are
    optional: without them the sink serves every run except ``--resume --retry-errors``.
    """

    suffix: ClassVar[str] = ""

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def finished_ids(self) -> Iterator[str]:
        """Ids of the records already in the file (for ``--resume``), recovering from a torn last record."""

    def finished_id_batches(self) -> Iterator[Sequence[str]]:
        """The ids of :meth:`finished_ids` in batches (lists of str, or pyarrow string arrays), which is how
        ``--resume`` reads them; a sink may override it with a faster read of its file."""
        ids = self.finished_ids()
        while batch := list(itertools.islice(ids, ID_BATCH)):
            yield batch

    @abstractmethod
    def write(self, record: dict[str, Any]) -> None:
        """Append one record and make it durable."""

    @abstractmethod
    def close(self) -> None:
        """Flush and close the file, on disk."""

    def sync(self) -> None:  # noqa: B027 -- optional: a sink whose write() is already durable needs nothing
        """Put what was written so far on disk (``fsync``); the writer calls it every ``output.fsync_interval_s``.
        Raises ``OSError`` when that cannot be done, also when the file was removed while the run wrote it."""

    # --- optional: what ``matrix report`` reads ------------------------------------------------------------------

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in the file, in order, read as the caller iterates (recovering from a torn last record)."""
        raise NotImplementedError

    # --- optional: what ``--retry-errors`` needs ---------------------------------------------------------------

    def finished(self) -> Iterator[FinishedRecord]:
        """Id and status of each record already in the file, recovering from a torn last record."""
        raise NotImplementedError

    def remove(self, ids: Collection[str]) -> None:
        """Remove the records of ``ids`` from the file (before the run writes any), atomically: a crash leaves the
        file as it was or without them (see :func:`replace_atomically`)."""
        raise NotImplementedError

    @classmethod
    def can_remove(cls) -> bool:
        """Whether the sink implements :meth:`finished` and :meth:`remove`, which ``--retry-errors`` needs."""
        return cls.finished is not Sink.finished and cls.remove is not Sink.remove


@contextmanager
def replace_atomically(path: Path) -> Iterator[IO[bytes]]:
    """A binary file to write the new content of ``path`` to: a temporary file beside it (``<name>.tmp``) that
    replaces ``path`` only once written whole and on disk, so that a crash leaves the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as file:
            yield file
            file.flush()
            # on disk before the rename: else a power loss could leave the new name on an empty file
            os.fsync(file.fileno())
        os.replace(temporary, path)
        sync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def sync_directory(directory: Path) -> None:
    """Put ``directory``'s entries on disk: a file just created or renamed there survives a power loss."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
