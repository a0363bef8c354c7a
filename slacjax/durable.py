"""Files written whole or not at all, and failures said in one line.

A file is written under a temporary name beside its target (`.<name>.<pid>.partial`),
flushed to disk and renamed over the target, so a reader, a kill or a full disk leaves the
old file or the new one, never half of one. A write the file system refuses removes what it
wrote and raises `WriteError`: one line naming the path, the OS error and the free space.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
from typing import Iterator

PARTIAL_SUFFIX = ".partial"
_WRITING: set[pathlib.Path] = set()  # temporary files being written now, for `discard_partials`


class WriteError(Exception):
    """A file that could not be written (a full disk, a read-only or failing file system);
    the message is one line for the user."""


def os_error_text(error: OSError) -> str:
    """'[Errno 28] No space left on device': the OS error without its file name."""
    return f"[Errno {error.errno}] {error.strerror or os.strerror(error.errno or 0)}"


def free_space(directory: pathlib.Path) -> str:
    """'12.3 MiB free' on the file system of `directory` (or its nearest existing parent)."""
    directory = pathlib.Path(directory)
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free"


def write_error(path: pathlib.Path, reason: str) -> WriteError:
    """'could not write <path>: <reason> (<free space>)'."""
    path = pathlib.Path(path)
    return WriteError(f"could not write {path}: {reason} ({free_space(path.parent)})")


def partial_path(path: pathlib.Path) -> pathlib.Path:
    """Where `path`'s new content is written before the rename: hidden, named by this
    process, so two writers never share one and `remove_partials` finds what a kill left."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


def sync_file(path: pathlib.Path) -> None:
    """Flushes `path`'s content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(directory: pathlib.Path) -> None:
    """Flushes `directory`'s entries (a rename, a new file) to the disk, where the file system
    can (some refuse to sync a directory: EINVAL)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _discard(path: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Yields the temporary path to write `path`'s new content to; when the block ends, that
    file is synced and renamed over `path`.

    An OSError in the block or after it: the temporary file is removed and WriteError raised
    (naming `path`); anything else raised in the block (a WriteError of its own, Ctrl-C)
    removes it too and propagates."""
    path = pathlib.Path(path)
    temporary = partial_path(path)
    _WRITING.add(temporary)
    try:
        yield temporary
        sync_file(temporary)
        os.replace(temporary, path)
        sync_directory(path.parent)
    except OSError as error:
        _discard(temporary)
        raise write_error(path, os_error_text(error)) from None
    except BaseException:
        _discard(temporary)
        raise
    finally:
        _WRITING.discard(temporary)


def discard_partials() -> None:
    """Removes the temporary files being written now: for a process about to exit at once
    (`os._exit`, which runs no `finally`)."""
    for temporary in list(_WRITING):
        _discard(temporary)


def write_bytes(path: pathlib.Path, data: bytes) -> None:
    """`path` holds `data`, whole, or what it held before (WriteError)."""
    with replacing(path) as temporary:
        temporary.write_bytes(data)


def remove_partials(directory: pathlib.Path) -> list[pathlib.Path]:
    """Removes the temporary files that writers killed mid-write left in `directory` (not
    below it) -> their paths. Only for a directory no other process writes to (one whose
    lock this process holds)."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    removed = sorted(path for path in directory.glob(f".*{PARTIAL_SUFFIX}") if path.is_file())
    for path in removed:
        _discard(path)
    return removed
