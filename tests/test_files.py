"""What the service creates on disk is private to its user, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from service.config import Settings
from service.crypto import KEY_FILE, load_cipher
from service.files import private_directory, private_file
from service.storage import open_store

from .conftest import NOW_MS
from .service_process import run_cli, service_env

# 0: every bit the service asks for is granted; 0o277: even the owner's write bit is taken.
UMASKS = [0o000, 0o022, 0o277]


def mode(path: Path) -> str:
    """The permission bits in octal, as `ls -l` and chmod speak of them."""
    return oct(stat.S_IMODE(path.stat().st_mode))


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process umask set to `mask` (children inherit it), restored afterwards."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def operators_directory(tmp_path: Path) -> Path:
    """A directory that exists already, as the operator made it: 0755."""
    existing = tmp_path / "srv"
    existing.mkdir()
    existing.chmod(0o755)
    return existing


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mask", UMASKS)
async def test_the_sqlite_store_and_its_directories_are_private(
    settings: Settings, tmp_path: Path, mask: int
) -> None:
    existing = operators_directory(tmp_path)
    path = existing / "data" / "store" / "template-sync.db"
    url = f"sqlite:///{path}"
    env = service_env(replace(settings, database_url=url), PYTHONDONTWRITEBYTECODE="1")
    with umask(mask):
        code, _, err = await run_cli(env, tmp_path, "migrate")
    assert code == 0, err
    assert (mode(path.parent.parent), mode(path.parent), mode(path)) == ("0o700", "0o700", "0o600")
    assert mode(existing) == "0o755"  # left as the operator made it
    with umask(mask):
        store = await open_store(url)
        try:
            await store.create_workspace("Acme", NOW_MS)  # the store has written
            wal, shm = (path.with_name(f"{path.name}-{suffix}") for suffix in ("wal", "shm"))
            assert (mode(wal), mode(shm)) == ("0o600", "0o600")
        finally:
            await store.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_data_directory_made_for_a_generated_key_is_private(
    settings: Settings, tmp_path: Path
) -> None:
    data_dir = operators_directory(tmp_path) / "data"
    with umask(0):
        load_cipher(replace(settings, encryption_keys=(), data_dir=data_dir))
    assert (mode(data_dir), mode(data_dir / KEY_FILE)) == ("0o700", "0o600")


def test_existing_files_and_directories_are_left_alone(tmp_path: Path) -> None:
    directory, file = tmp_path / "operators", tmp_path / "operators" / "kept.db"
    directory.mkdir(mode=0o750)
    directory.chmod(0o750)
    file.write_bytes(b"data")
    file.chmod(0o640)
    private_directory(directory)
    private_file(file)
    assert (mode(directory), mode(file), file.read_bytes()) == ("0o750", "0o640", b"data")
