"""A run's checkpoints: {TrainState, Replay, meta (counters, config)} via orbax's CheckpointManager.

Checkpoints are numbered 0, 1, 2, … in the order they were written (several can share an env
step: the end of collection, of pretraining, an interrupt); a folder is named by its env step
(9 digits) and its number, `000160000_7`, so that a user can tell which is which (folders
written before, named by the number alone, are read as well). orbax writes each into a
temporary directory and renames it when complete; the last `keep` are kept. Then `FILES`
records every file's size and CRC-32: orbax restores a truncated or altered file without a
word in some cases (a cut tail, a flipped byte), so a restore checks them first and names
what differs (missing, empty, shorter, grown, content).
`restore_newest` falls back past damaged checkpoints (their files, the record itself, a meta
the caller finds of another shape), moving each to `<number>.corrupt` (which orbax does not
list). A failed save removes its partial files and raises `CheckpointWriteError`, one line
with the OS error and the free space, whichever of orbax's threads failed.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil
import sys
import threading
import time
import traceback
import zlib
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from slacjax import durable, parallel

CHECKPOINT_DIR = "checkpoints"
FILES = "slacjax_files.json"  # inside each checkpoint: {relative path: [size, crc32]}
META_FILE = "meta/metadata"  # inside each checkpoint: orbax's file of the JSON item `meta`
DAMAGED_SUFFIX = ".corrupt"
_PARTIAL_MARK = ".orbax-checkpoint-tmp"  # in the names of orbax's unfinished directories
_NAME = re.compile(r"(?:(\d{9,})_)?(\d+)")  # <env step>_<number>, or <number> (older)
_CHUNK = 1 << 22
_WRITER_WAIT_S = 60.0  # for orbax's writer threads after a failed save


class CheckpointError(Exception):
    """A checkpoint that cannot be read back (damaged, or of another shape)."""


class CheckpointWriteError(Exception):
    """A checkpoint that could not be written (disk full, read-only); one line for the user."""


class CheckpointRefused(Exception):
    """An intact checkpoint the caller must not use (of another run, or written by a newer
    slacjax): raised by `restore_newest`'s `abstract_for`, then named with the checkpoint."""


class _QuietOrbax(logging.Filter):
    """Drops orbax's own log records below CRITICAL: on a failed write it logs a traceback per
    thread (244 of them for one full disk); the caller reports the failure in one line."""

    _package = os.path.dirname(ocp.__file__)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or not record.pathname.startswith(self._package)


class _QuietOrbaxFutures(logging.Filter):
    """Drops asyncio's 'exception was never retrieved' records of orbax's futures: after one
    write of a failed save raised, orbax leaves the others' errors unread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[2] is None:
            return True
        frames = traceback.extract_tb(record.exc_info[2])
        return not any(frame.filename.startswith(_QuietOrbax._package) for frame in frames)


logging.getLogger("absl").addFilter(_QuietOrbax())
logging.getLogger("asyncio").addFilter(_QuietOrbaxFutures())


def _drop_orbax_leftovers(hook: Callable) -> Callable:
    """`sys.unraisablehook` without what a failed orbax read or write leaves behind: its
    unfinished coroutines (each printing a page of TensorStore spec when garbage-collected)
    and its thread-pool callbacks into the event loop it already closed."""
    def unraisablehook(unraisable) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and code.co_filename.startswith(_QuietOrbax._package):
            return
        if (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"):
            return
        hook(unraisable)

    return unraisablehook


sys.unraisablehook = _drop_orbax_leftovers(sys.unraisablehook)


class _Names(ocp.path.step.NameFormat):
    """orbax's naming of the checkpoint folders: orbax's step is the checkpoint's number; a
    folder is `<env step, 9 digits>_<number>`, or `<number>` (written before names held the
    env step, or saved without one). Unfinished and set-aside folders do not match."""

    def __init__(self):
        self.env_step: int | None = None  # of the save under way

    def build_name(self, step: int) -> str:
        return str(step) if self.env_step is None else f"{self.env_step:09d}_{step}"

    def find_all(self, base_path) -> list:
        base = pathlib.Path(base_path)
        if not base.is_dir():
            return []
        return [ocp.path.step.Metadata(step=int(match[2]), path=epath.Path(path))
                for path in base.iterdir()
                if (match := _NAME.fullmatch(path.name)) and path.is_dir()]

    def find_step(self, base_path, step: int):
        for metadata in self.find_all(base_path):
            if metadata.step == step:
                return metadata
        raise ValueError(f"no checkpoint {step} in {base_path}")


def _with_local_sharding(abstract_tree):
    sharding = parallel.local_device_sharding()
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=sharding), abstract_tree)


def os_error_of(error: BaseException) -> str | None:
    """'[Errno 28] No space left on device' if `error` (or one it was raised from) is an OS
    error; TensorStore reports them as ValueError text with `os_error_code='28'` -> else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno:
            return f"[Errno {error.errno}] {os.strerror(error.errno)}"
        code = re.search(r"os_error_code=\W*(\d+)", str(error))
        if code:
            return f"[Errno {code[1]}] {os.strerror(int(code[1]))}"
        error = error.__cause__ or error.__context__
    return None


# TensorStore's status codes (the start of its messages) for files it cannot read.
_STATUS_WORDS = {"NOT_FOUND": "missing file", "OUT_OF_RANGE": "file truncated",
                 "DATA_LOSS": "file damaged"}


def short_reason(error: BaseException) -> str:
    """A few words on why orbax/TensorStore could not read a checkpoint (their messages run to
    pages of JSON specs and object reprs)."""
    chain = [error]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for link in reversed(chain):  # the innermost error says most
        status = re.match(r"([A-Z_]+): ", str(link))
        if isinstance(link, FileNotFoundError) or (status and status[1] == "NOT_FOUND"):
            return "missing file"
        if status and status[1] in _STATUS_WORDS:
            array = re.search(r'Error reading "([^"]+)"', str(link))
            return _STATUS_WORDS[status[1]] + (f" (array {array[1]})" if array else "")
    os_error = os_error_of(error)
    if os_error:
        return os_error
    first = re.split(r"See full|\.\s|\s<", str(error).strip().split("\n")[0])[0].strip(" .:")
    first = first[:100] + ("…" if len(first) > 100 else "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _attempt(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """-> (`call()`, None), or (None, the short reason of what it raised)."""
    try:
        return call(), None
    except Exception as error:  # orbax raises many types for unreadable or mismatched files
        return None, short_reason(error)


def _file_sums(directory: pathlib.Path) -> dict[str, list[int]]:
    """{path relative to `directory`: [size, crc32]} of every file under it but `FILES`."""
    sums = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative != FILES:
            crc = 0
            with open(path, "rb") as file:
                while chunk := file.read(_CHUNK):
                    crc = zlib.crc32(chunk, crc)
            sums[relative] = [path.stat().st_size, crc]
    return sums


def _file_damage(relative: str, recorded: list[int], found: list[int] | None) -> str | None:
    """How one file differs from its record [size, crc32] -> None if it does not."""
    size, crc = recorded
    if found is None:
        return f"file {relative} is missing"
    if found[0] == 0 < size:
        return f"file {relative} is empty ({size} bytes recorded)"
    # Shorter is not called truncated: a file overwritten with fewer other bytes is shorter too.
    if found[0] < size:
        return f"file {relative} is shorter than recorded ({found[0]} of {size} bytes)"
    if found[0] > size:
        return f"file {relative} has grown ({found[0]} bytes, {size} recorded)"
    if found[1] != crc:
        return f"file {relative}: content differs (same size, another CRC-32)"
    return None


def damage(directory: pathlib.Path) -> str | None:
    """Why the checkpoint in `directory` differs from its `FILES` record (the first file that
    does, and how many others) -> None if it does not, or if it has no record (written before
    records existed, or killed between rename and record) but some files."""
    try:
        data = (directory / FILES).read_bytes()
    except FileNotFoundError:
        return "its folder is empty" if not any(directory.rglob("*")) else None
    except OSError as error:
        return f"{FILES} is unreadable ({os_error_of(error)})"
    if not data:
        sizes = [path.stat().st_size for path in directory.rglob("*") if path.is_file()]
        return "every file in it is empty" if not any(sizes) else f"{FILES} is empty"
    recorded, why = _read_record(data)
    if why is not None:
        return f"{FILES} is unreadable ({why})"
    try:
        found = _file_sums(directory)
    except OSError as error:  # a disk error, or a file that is not ours to read
        return f"file {error.filename} is unreadable ({os_error_of(error)})"
    problems = [problem for relative, sums in recorded.items()
                if (problem := _file_damage(relative, sums, found.get(relative)))]
    if not problems:
        return None
    others = len(problems) - 1
    return problems[0] + (f"; {others} other file{'s' * (others > 1)} too" if others else "")


def _read_record(data: bytes) -> tuple[dict[str, list[int]] | None, str | None]:
    """A `FILES` record's bytes -> ({relative path: [size, crc32]}, None), or (None, why not)."""
    try:
        recorded = json.loads(data.decode())
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError:
        return None, "not JSON"
    if not isinstance(recorded, dict) or not all(
            isinstance(sums, list) and len(sums) == 2
            and all(isinstance(value, int) and not isinstance(value, bool) for value in sums)
            for sums in recorded.values()):
        return None, "not a record of file sizes and CRC-32s"
    return recorded, None


def meta_damage(directory: pathlib.Path) -> str | None:
    """Why the meta file of the checkpoint in `directory` does not read -> None if it is JSON
    (for checkpoints without a `FILES` record, which `damage` cannot check)."""
    path = directory / META_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return f"{META_FILE} is missing"
    except UnicodeDecodeError:
        return f"{META_FILE} is unreadable (not UTF-8 text)"
    except OSError as error:
        return f"{META_FILE} is unreadable ({os_error_of(error)})"
    if not text:
        return f"{META_FILE} is empty"
    try:
        json.loads(text)
    except ValueError:
        return f"{META_FILE} is unreadable (not JSON)"
    return None


class Checkpoints:
    """The `checkpoints/` directory of one run dir.

    Opened for writing (not `read_only`), which needs the run dir's lock (run_lock.py), it
    first removes the partial checkpoints of a killed save, saying so with `say`.
    """

    def __init__(self, run_dir: pathlib.Path, keep: int = 2, read_only: bool = False,
                 say: Callable[[str], Any] = print):
        self.directory = pathlib.Path(run_dir).resolve() / CHECKPOINT_DIR
        self.read_only = read_only
        self.failed_save = False
        if not read_only:
            for partial in self._partial_dirs():
                shutil.rmtree(partial)
                say(f"removed {partial}, a checkpoint left half-written by a killed run")
        # read_only: for readers (evaluation, tests) that never save; it only skips creating
        # the directory (orbax's own read-only mode logs warnings on every use).
        self.names = _Names()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, step_name_format=self.names,
            # Saves block: the state is donated to the next update right after a save.
            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def _partial_dirs(self) -> list[pathlib.Path]:
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if _PARTIAL_MARK in path.name)

    def numbers(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest(self) -> int | None:
        numbers = self.numbers()
        return numbers[-1] if numbers else None

    def path(self, number: int) -> pathlib.Path:
        """The folder of checkpoint `number` (where a save under way writes it)."""
        for metadata in self.names.find_all(self.directory):
            if metadata.step == number:
                return pathlib.Path(metadata.path)
        return self.directory / self.names.build_name(number)

    def save(self, state, replay, meta: dict, env_step: int | None = None) -> pathlib.Path:
        """Writes checkpoint latest+1 (named by `env_step`, where given) and waits until it
        is on disk -> its path.

        Raises CheckpointWriteError when the file system refuses (its partial files removed,
        the earlier checkpoints untouched).
        """
        previous = self.latest()
        number = 0 if previous is None else previous + 1
        self.names.env_step = env_step
        path = self.path(number)
        self.failed_save = False
        try:
            self.manager.save(number, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), replay=ocp.args.StandardSave(replay),
                meta=ocp.args.JsonSave(meta)))
            self.manager.wait_until_finished()
            record = path / f"{FILES}.partial"
            record.write_text(json.dumps(_file_sums(path)))
            os.replace(record, path / FILES)
        except Exception as error:
            self.failed_save = True
            os_error = os_error_of(error)
            if os_error is None:  # not the file system: a bug, with its traceback
                self._remove_partial(number)
                raise
        else:
            return path
        finally:
            self.names.env_step = None
        self._remove_partial(number)
        kept = "no earlier checkpoint" if previous is None else f"{self.path(previous)} is intact"
        raise CheckpointWriteError(f"could not write checkpoint {path}: {os_error} "
                                   f"({durable.free_space(self.directory)}); {kept}")

    def _remove_partial(self, number: int) -> None:
        """Removes what a failed save of `number` left (including a renamed but unrecorded
        directory) and makes orbax forget it."""
        # After one item fails, orbax stops waiting for the others, whose writes go on in its
        # threads: wait for those (every save here is blocking, so all of them are this one's).
        deadline = time.monotonic() + _WRITER_WAIT_S
        for thread in threading.enumerate():
            if type(thread).__module__.startswith("orbax."):
                try:  # orbax's threads raise their own error again when joined
                    thread.join(max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001  (the save's error is already in hand)
                    continue
        for partial in self._partial_dirs() + [self.path(number)]:
            shutil.rmtree(partial, ignore_errors=True)
        self.manager.reload()

    def meta(self, number: int) -> dict:
        restored, failure = _attempt(lambda: self.manager.restore(
            number, args=ocp.args.Composite(meta=ocp.args.JsonRestore())))
        if failure is not None:
            raise CheckpointError(f"checkpoint {self.path(number)} is unreadable "
                                  f"({failure})")
        return restored["meta"]

    def metas(self) -> dict[int, dict]:
        """{number: meta} of the checkpoints whose meta reads (others are left out)."""
        metas = {}
        for number in self.numbers():
            try:
                metas[number] = self.meta(number)
            except CheckpointError:
                continue
        return metas

    def restore(self, number: int, abstract_state, abstract_replay=None):
        """-> (state, replay or None, meta); the abstract trees give shapes and dtypes.

        Without `abstract_replay` the replay is not read (evaluation needs the policy only).
        Raises CheckpointError if the checkpoint is damaged or does not fit the trees.
        """
        why = damage(self.path(number))
        if why is not None:
            raise CheckpointError(f"checkpoint {self.path(number)} is damaged: {why}")
        restored, failure = self._read(number, abstract_state, abstract_replay)
        if failure is not None:
            raise CheckpointError(f"checkpoint {self.path(number)} could not be restored "
                                  f"({failure})")
        return restored

    def _read(self, number: int, abstract_state, abstract_replay):
        """-> ((state, replay or None, meta), None) or (None, why not)."""
        items = dict(state=ocp.args.StandardRestore(_with_local_sharding(abstract_state)),
                     meta=ocp.args.JsonRestore())
        if abstract_replay is not None:
            items["replay"] = ocp.args.StandardRestore(_with_local_sharding(abstract_replay))
        restored, failure = _attempt(lambda: self.manager.restore(
            number, args=ocp.args.Composite(**items)))
        if failure is not None:
            return None, failure
        return (restored["state"], restored.get("replay"), restored["meta"]), None

    def restore_newest(self, abstract_for: Callable[[dict], tuple | None],
                       say: Callable[[str], Any] = print) -> tuple[int, Any, Any, dict] | None:
        """The newest checkpoint that restores completely -> (number, state, replay, meta), or
        None if there is none.

        `abstract_for(meta)` -> (abstract state, abstract replay or None), or None to pass the
        checkpoint over without a word; it raises CheckpointError for a meta of another shape
        (damage) and CheckpointRefused for a checkpoint that must not be used (raised again
        here, naming the checkpoint). A damaged checkpoint (a file missing, empty, shorter or
        longer than recorded, or of its size with another CRC-32; its record unreadable; an
        empty folder; a meta file missing, empty, not JSON or of another shape; for one
        without a `FILES` record, any read error) is skipped with one line through `say` and
        moved to `<number>.corrupt` (left in place when read-only). An intact one that does
        not restore (another shape) raises CheckpointError.
        """
        for number in reversed(self.numbers()):
            path = self.path(number)
            why = damage(path)
            if why is None:
                try:
                    meta = self.meta(number)
                except CheckpointError:
                    why = meta_damage(path) or "unreadable meta"
            if why is None:
                try:
                    abstract = abstract_for(meta)
                except CheckpointError as error:
                    why = str(error)
                except CheckpointRefused as error:
                    raise CheckpointRefused(f"checkpoint {path} {error}") from None
                else:
                    if abstract is None:
                        continue
            if why is None:
                restored, failure = self._read(number, *abstract)
                if failure is None:
                    return (number, *restored)
                if (path / FILES).exists():
                    raise CheckpointError(f"checkpoint {path} could not be restored "
                                          f"({failure})")
                why = failure
            say(f"skipped checkpoint {path}: {why}; {self._set_aside(path)}")
        return None

    def _set_aside(self, path: pathlib.Path) -> str:
        """Moves a damaged checkpoint out of orbax's sight -> what was done, for the user."""
        if self.read_only:
            return "left in place"
        target = path.with_name(path.name + DAMAGED_SUFFIX)
        copies = 1
        while target.exists():
            copies += 1
            target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{copies}")
        try:
            path.rename(target)
        except OSError as error:
            return f"left in place (it cannot be moved: {os_error_of(error)})"
        self.manager.reload()
        return f"moved to {target.name}"

    def close(self) -> None:
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001
            if not self.failed_save:
                raise
            # orbax's threads of the failed save raise its error again; it was reported.
