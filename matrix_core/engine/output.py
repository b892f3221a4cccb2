"""A run's claim on its output: the path checked before anything is spent, and a lock held for the whole run."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from matrix_core.errors import OutputError
from matrix_core.sinks.base import companion


def check_writable(output: Path) -> None:
    """Refuse an output that cannot be written, in one line naming it and why: ``output`` names a directory, or its
    directory neither exists nor can be created, or is not writable. Creates the missing directories."""
    if output.is_dir():
        raise OutputError(f"cannot write {output}: it is a directory", hint="-o names the output file")
    directory = output.parent
    try:
        existing = next(folder for folder in (directory, *directory.parents) if folder.exists())
        if not existing.is_dir():
            raise OutputError(f"cannot write {output}: {existing} is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {output}: {error.strerror or error}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {output}: {directory} is not writable")
    if output.exists() and not os.access(output, os.W_OK):
        raise OutputError(f"cannot write {output}: permission denied")


class OutputLock:
    """An exclusive lock on ``<stem>.lock`` beside the output, held by the process that drives the run, so that two
    runs never write one output (nor one's parquet journal). It holds that process's pid, for the refusal to name.

    ``flock`` dies with the process, so a crash releases it; the file is removed on release, and an acquirer checks
    that the file it locked is still the one at the path (else it was removed by a release in between). The writer
    actor holds a second one, ``<stem>.writer.lock`` (``name``): a driver killed with SIGKILL releases the first at
    once, while Ray takes a moment to end its actors, and a resumed run's writer waits for the old one to end."""

    def __init__(self, output: Path, name: str = "lock") -> None:
        self.output = output
        self.path = companion(output, name)
        self._descriptor: int | None = None

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait_s`` for its holder to end, or raise :class:`OutputError` naming the
        run that holds it."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(descriptor)
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise OutputError(
                    f"{self.output} is being written by another run (pid {holder})",
                    hint=f"wait for it to end, or choose another -o (its lock: {self.path})",
                ) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(descriptor).st_ino:
                break
            os.close(descriptor)  # released and removed between our open and our lock: lock the new file
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Remove the lock file and let go of it."""
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: nobody locks the file on its way out
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
