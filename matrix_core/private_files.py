"""Files only this user may read: directories made 0700 (refused when planted by someone else or a symlink) and
files written 0600 through a new file renamed into place (never through a symlink). Cluster tokens and state, the
keys of inference servers Matrix starts, and their config files live in them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from matrix_core.errors import MatrixError


def private_directory(path: Path) -> None:
    """Create ``path`` with mode 700, or keep it if it is already a directory of this user's (made private); a
    symlink or a directory owned by someone else is refused rather than used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # a symlink (ELOOP) or not a directory (ENOTDIR)
        descriptor = None
    try:
        if descriptor is None or os.fstat(descriptor).st_uid != os.getuid():
            raise MatrixError(
                f"{path} is a symlink, not a directory, or someone else's: refusing to use it",
                hint="remove it if it is yours, or set MATRIX_HOME to a directory of yours",
            )
        os.fchmod(descriptor, 0o700)
    finally:
        if descriptor is not None:
            os.close(descriptor)


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole, mode 600, through a new file (never through a symlink or a file planted before) that
    then replaces it: readers see the old content or the new, never half."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    temporary.replace(path)
