"""One writer per run dir: an exclusive `flock` on `<run_dir>/.slacjax.lock`.

The kernel drops the lock when its holder's file descriptor closes, which includes any death
of the process (SIGKILL, OOM killer, a node reboot), so a lock is never stale. The holder
writes who it is into the file; a refused process names it. On NFS (v4, or v3 with lockd),
Linux maps `flock` to byte-range locks the server enforces across nodes; a crashed node's
lock lapses with its lease. The file is never deleted (deleting a lock file lets two
processes lock two different files): `overwrite=true` must skip `LOCK_FILE`.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket

LOCK_FILE = ".slacjax.lock"


class RunDirError(Exception):
    """A run dir this process may not use; the message is one line for the user."""


class RunDirBusy(RunDirError):
    """Another process holds the run dir's lock."""


class RunDirNotWritable(RunDirError):
    """The run dir (or, for a new one, its parent) cannot be written."""


def os_error_text(error: OSError) -> str:
    """'[Errno 30] Read-only file system': the OS error without its file name."""
    return f"[Errno {error.errno}] {error.strerror or os.strerror(error.errno or 0)}"


def describe_holder(text: str) -> str:
    """The lock file's content -> 'training (host h, PID p, since …)'."""
    try:
        holder = json.loads(text)
        return (f"{holder['purpose']} (host {holder['host']}, PID {holder['pid']}, "
                f"since {holder['since']})")
    except (ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "another process"


@dataclasses.dataclass
class RunLock:
    """A held lock on `run_dir`; `release()` (or leaving a `with` block) lets it go."""

    run_dir: pathlib.Path
    purpose: str
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a holder that is gone is not described
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def acquire(run_dir: pathlib.Path, purpose: str) -> RunLock:
    """Locks `run_dir` (created, parents too, if absent) for `purpose` ('training', …).

    Never waits: raises RunDirBusy naming the holder, RunDirNotWritable if the directory or its
    lock file cannot be created or written, RunDirError if the file system cannot lock.
    """
    run_dir = pathlib.Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunDirNotWritable(
            f"run dir {run_dir} cannot be written: {os_error_text(error)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        try:
            holder = describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        finally:
            os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise RunDirBusy(f"run dir {run_dir} is in use by {holder}; wait for it to end "
                             "or stop it") from None
        raise RunDirError(f"run dir {run_dir} cannot be locked ({os_error_text(error)}); "
                          "its file system does not support flock") from None
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    holder = dict(purpose=purpose, host=socket.gethostname(), pid=os.getpid(), since=since)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
    except OSError as error:
        os.close(fd)
        raise RunDirNotWritable(
            f"run dir {run_dir} cannot be written: {os_error_text(error)}") from None
    return RunLock(run_dir, purpose, fd)
