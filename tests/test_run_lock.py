"""One writer per run dir: a second process is refused, a dead holder's lock is free."""

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys

import pytest

from slacjax import run_lock

HOLDER = """
import sys, time
from slacjax import run_lock
lock = run_lock.acquire(sys.argv[1], "training")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_and_a_killed_holder_frees_the_dir(tmp_path):
    run_dir = tmp_path / "new" / "run"  # parents are created too
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(run_lock.RunDirBusy) as refused:
            run_lock.acquire(run_dir, "evaluation")
        message = str(refused.value)
        assert message.startswith(f"run dir {run_dir} is in use by training (host "
                                  f"{socket.gethostname()}, PID {holder.pid}, since 20")
        assert message.endswith(" UTC); wait for it to end or stop it")
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with run_lock.acquire(run_dir, "training") as lock:
        assert f"PID {os.getpid()}" in run_lock.describe_holder(
            (run_dir / run_lock.LOCK_FILE).read_text())
        with pytest.raises(run_lock.RunDirBusy):  # also within one process
            run_lock.acquire(run_dir, "training")
    assert lock.fd is None and (run_dir / run_lock.LOCK_FILE).read_text() == ""
    run_lock.acquire(run_dir, "training").release()


def test_a_run_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(run_lock.os, "open", read_only)
    with pytest.raises(run_lock.RunDirNotWritable) as refused:
        run_lock.acquire(tmp_path, "training")
    assert str(refused.value) == (f"run dir {tmp_path} cannot be written: "
                                  "[Errno 30] Read-only file system")
    monkeypatch.setattr(run_lock.pathlib.Path, "mkdir", read_only)
    with pytest.raises(run_lock.RunDirNotWritable, match="Read-only file system"):
        run_lock.acquire(tmp_path / "new", "training")


def test_a_file_system_without_flock_is_one_line(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(run_lock.RunDirError, match=r"cannot be locked \(\[Errno 37\] "):
        run_lock.acquire(tmp_path, "training")
