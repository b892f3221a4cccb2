"""Sets of task ids that grow with the input, kept out of the processes' memory: exact sets in a temporary SQLite
file, and the finished ids a resume skips as sorted 64-bit hashes, which every partition reads from Ray's object
store without a copy of its own."""

from __future__ import annotations

import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

from matrix_core.errors import MatrixError

CACHE_KIB = 8192
"""SQLite's page cache per set: what of a set stays in memory; the rest is read from its file as needed."""


_SEED, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK = (1 << 64) - 1
CHUNK = 1 << 16
"""Ids hashed at a time."""


def id_hash(task_id: str) -> int:
    """A 64-bit hash of ``task_id``, the same in every process (Python's ``hash`` of a str is not) and the same as
    :func:`id_hashes` gives: each 8-byte word of its UTF-8 form is mixed in with splitmix64's finalizer."""
    data = task_id.encode(errors="surrogatepass")
    state = len(data) * _SEED & _MASK
    for (word,) in struct.iter_unpack("<Q", data + bytes(-len(data) % 8)):
        state = _mix(state ^ word)
    return _mix(state)


def _mix(state: int) -> int:
    state = (state ^ (state >> 30)) * _M1 & _MASK
    state = (state ^ (state >> 27)) * _M2 & _MASK
    return state ^ (state >> 31)


def id_hashes(ids: Sequence[str] | pa.Array) -> np.ndarray:
    """:func:`id_hash` of each of ``ids``, computed a word at a time over :data:`CHUNK` of them."""
    if len(ids) > CHUNK:
        return np.concatenate([_chunk_hashes(ids[start : start + CHUNK]) for start in range(0, len(ids), CHUNK)])
    return _chunk_hashes(ids)


def _chunk_hashes(ids: Sequence[str] | pa.Array) -> np.ndarray:
    try:
        array = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
    except (pa.ArrowException, UnicodeEncodeError):  # a lone surrogate has no UTF-8 form: one by one
        return np.fromiter(map(id_hash, ids), dtype=np.uint64, count=len(ids))
    count = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=count + 1, offset=array.offset * 4)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if count and offsets[-1] else np.empty(0, np.uint8)
    longest = int(lengths.max()) if count else 0
    padded = np.zeros((count, (longest + 7) // 8 * 8), dtype=np.uint8)
    if count and longest == lengths.min():  # ids of one length (the common case): the bytes are a matrix already
        padded[:, :longest] = data[offsets[0] : offsets[-1]].reshape(count, longest)
    else:
        rows = np.repeat(np.arange(count), lengths)
        starts = np.repeat(offsets[:-1] - offsets[0], lengths)
        padded[rows, np.arange(len(rows)) - starts] = data[offsets[0] : offsets[-1]]
    state = lengths.astype(np.uint64) * np.uint64(_SEED)
    for word, column in enumerate(padded.view("<u8").T):
        state = np.where(lengths > word * 8, _mix_all(state ^ column), state)
    return _mix_all(state)


def _mix_all(state: np.ndarray) -> np.ndarray:
    state = (state ^ (state >> np.uint64(30))) * np.uint64(_M1)
    state = (state ^ (state >> np.uint64(27))) * np.uint64(_M2)
    return state ^ (state >> np.uint64(31))


class FinishedIds:
    """The ids a resume skips, as sorted 64-bit hashes: 8 bytes an id. Two different ids share a hash with
    probability about 2^-64 a pair (under 10^-5 for 10 million finished ids against 10 million new ones); such an id
    would be skipped as finished."""

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = hashes
        """Sorted, without repeats."""

    @classmethod
    def of(cls, batches: Iterable[Sequence[str] | pa.Array]) -> FinishedIds:
        """Hash the ids of ``batches`` (lists of str or pyarrow string arrays), holding 8 bytes an id meanwhile."""
        chunks = [id_hashes(batch) for batch in batches if len(batch)]
        hashes = np.sort(np.concatenate(chunks)) if chunks else np.empty(0, dtype=np.uint64)
        return cls(hashes[np.concatenate(([True], hashes[1:] != hashes[:-1]))] if len(hashes) else hashes)

    @classmethod
    def empty(cls) -> FinishedIds:
        """No id finished: a run that does not resume."""
        return cls(np.empty(0, dtype=np.uint64))

    def positions(self, ids: Sequence[str] | pa.Array) -> np.ndarray:
        """Each id's position among the finished ids (the same in every process), -1 for one not finished."""
        if not len(self.hashes):
            return np.full(len(ids), -1, dtype=np.int64)
        wanted = id_hashes(ids)
        order = np.argsort(wanted)  # sorted keys: each search starts where the last one ended
        at = np.empty(len(wanted), dtype=np.int64)
        at[order] = np.searchsorted(self.hashes, wanted[order])
        at = np.minimum(at, len(self.hashes) - 1)
        return np.where(self.hashes[at] == wanted, at, -1)

    def position(self, task_id: str) -> int:
        """``task_id``'s position among the finished ids, -1 if it is not finished."""
        if not len(self.hashes):
            return -1
        wanted = id_hash(task_id)
        at = int(self.hashes.searchsorted(np.uint64(wanted)))
        return at if at < len(self.hashes) and int(self.hashes[at]) == wanted else -1

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self.position(task_id) >= 0

    def __len__(self) -> int:
        return len(self.hashes)


class IdStore:
    """An exact set of ids, each with a note (where it was first seen), in a temporary SQLite file that is deleted
    when the store is closed or its process ends (it has no name on disk): memory holds :data:`CACHE_KIB` of it,
    whatever its size. A file that cannot grow (a full disk) raises :class:`MatrixError`, naming the directory."""

    def __init__(self) -> None:
        with _temporary_file():
            handle, path = tempfile.mkstemp(prefix="matrix-ids-", suffix=".sqlite")
            os.close(handle)
            self._db = sqlite3.connect(path)
            os.unlink(path)  # no name on disk: the file goes when the connection closes or the process ends
            for pragma in ("journal_mode = OFF", "synchronous = OFF", f"cache_size = -{CACHE_KIB}"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("CREATE TABLE ids (id BLOB PRIMARY KEY, note BLOB NOT NULL) WITHOUT ROWID")

    def add(self, task_id: str, note: str = "") -> str | None:
        """Add ``task_id``; returns None if it is new, else the note it was first added with."""
        key = _encoded(task_id)
        with _temporary_file():
            if self._db.execute("INSERT OR IGNORE INTO ids VALUES (?, ?)", (key, _encoded(note))).rowcount == 1:
                return None
            (first,) = self._db.execute("SELECT note FROM ids WHERE id = ?", (key,)).fetchone()
        return bytes(first).decode(errors="surrogatepass")

    def update(self, ids: Iterable[str]) -> None:
        """Add every id of ``ids`` (those already in are left as they are)."""
        with _temporary_file():
            self._db.executemany("INSERT OR IGNORE INTO ids VALUES (?, x'')", ((_encoded(task_id),) for task_id in ids))

    def __contains__(self, task_id: object) -> bool:
        if not isinstance(task_id, str):
            return False
        with _temporary_file():
            return self._db.execute("SELECT 1 FROM ids WHERE id = ?", (_encoded(task_id),)).fetchone() is not None

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM ids").fetchone()[0]

    def close(self) -> None:
        """Delete the file."""
        self._db.close()


def _encoded(text: str) -> bytes:
    """``text`` as UTF-8, lone surrogates (from a file name that is not UTF-8) included."""
    return text.encode(errors="surrogatepass")


@contextmanager
def _temporary_file() -> Iterator[None]:
    """Turn SQLite's failure to write its temporary file into one line naming where it is."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as error:
        raise MatrixError(
            f"cannot keep task ids in a temporary file in {tempfile.gettempdir()}: {error}",
            hint="free space there, or point TMPDIR at a disk with room",
        ) from None
