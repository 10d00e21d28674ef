"""Files and directories the service creates: private to its user, whatever the umask.

They hold tenants' data and keys (the SQLite store, the generated encryption key), so a new
directory is 0700 and a new file 0600. SQLite gives a database's -wal and -shm files the
database file's mode. What exists already is left as the operator made it.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600


def private_directory(path: Path) -> None:
    """Create `path` and each missing parent, 0700; an existing one is left alone."""
    missing = []
    for directory in (path, *path.parents):
        if directory.is_dir():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIRECTORY)
        except FileExistsError:
            continue  # made meanwhile by another process: as that one wanted it
        os.chmod(directory, PRIVATE_DIRECTORY)  # the umask may have taken the owner's bits


def private_file(path: Path) -> None:
    """Create `path` empty, 0600, unless it exists (then it is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
