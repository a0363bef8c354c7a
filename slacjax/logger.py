"""Where a run's numbers go: a JSONL file in the run dir always, wandb when enabled, a progress bar.

One row per log interval (and one per evaluation). Rows are flat dicts of JSON scalars (an
evaluation row also holds its episodes' returns as lists); the `phase` key says which phase
wrote them (collect / pretrain / train / eval). wandb is imported only when enabled, so a run
works where it is absent.

A row is complete once its newline is written: each is appended with one `write` of the whole
line, so a kill or a full disk can leave at most a torn last line (no newline), which readers
skip and a resume drops. A bad line anywhere else is an error naming the file and line.

Rows are as durable as checkpoints: before a checkpoint is written the log is synced to disk,
and the checkpoint records how many rows each log held and the last `TAIL_ROWS` of them. A
resume keeps the rows the checkpoint counted, puts back from its record those the file lost
(a torn last row, a deleted file), and says in one line what it could not put back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from collections import deque

from tqdm import tqdm

from slacjax import durable

METRICS_FILE = "metrics.jsonl"
TAIL_ROWS = 32  # the last rows of each log a checkpoint records, to redo what a file loses


class MetricsError(ValueError):
    """A complete line of a metrics file that is not a row: names the file and line."""


@dataclasses.dataclass(frozen=True)
class TornLine:
    """The last line of a metrics file when it has no newline: a row write cut off."""

    path: pathlib.Path
    line: int  # 1-based
    size: int  # bytes

    def __str__(self) -> str:
        return (f"{self.path}:{self.line}, a half-written last line ({self.size} bytes: a row "
                "write cut off by a kill or a full disk)")


@dataclasses.dataclass(frozen=True)
class Metrics:
    """A metrics file read: its rows and their lines' bytes (newline included), in order, and
    its torn last line if it has one."""

    rows: list[dict]
    lines: list[bytes]
    torn: TornLine | None


def parse_metrics(data: bytes, path: pathlib.Path) -> Metrics:
    """A metrics file's bytes -> its rows (blank lines skipped) and its torn last line.

    Raises MetricsError for a complete line that is not a JSON object."""
    pieces = data.split(b"\n")
    # split leaves the text after the last newline last: empty unless the last write was cut.
    complete, rest = pieces[:-1], pieces[-1]
    torn = TornLine(path, len(complete) + 1, len(rest)) if rest else None
    rows, lines = [], []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise MetricsError(f"{path}:{number}: not a JSON row ({error.msg}: column "
                               f"{error.colno})") from None
        except UnicodeDecodeError:
            raise MetricsError(f"{path}:{number}: not a JSON row (not UTF-8 text)") from None
        if not isinstance(row, dict):
            raise MetricsError(f"{path}:{number}: not a JSON object but {type(row).__name__}")
        rows.append(row)
        lines.append(line + b"\n")
    return Metrics(rows, lines, torn)


def read_metrics(run_dir: pathlib.Path) -> Metrics:
    """`run_dir`'s metrics file read (nothing if there is none); see parse_metrics."""
    path = pathlib.Path(run_dir) / METRICS_FILE
    if not path.exists():
        return Metrics([], [], None)
    return parse_metrics(path.read_bytes(), path)


def read_rows(run_dir: pathlib.Path) -> list[dict]:
    """Every complete row logged in `run_dir` so far (a torn last line skipped; none if
    nothing was logged). Raises MetricsError for a bad line elsewhere."""
    return read_metrics(run_dir).rows


def append_line(path: pathlib.Path, data: bytes) -> None:
    """Appends `data` (one whole line) to `path` in one `write`, so that a reader sees the
    row whole or not at all; a write that fails part way (a full disk) is undone."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write: the disk filled up meanwhile
                written += os.write(fd, data[written:])
        except OSError:
            os.ftruncate(fd, start)  # no torn line from this error (a kill can still leave one)
            raise
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class LoggedRows:
    """What a checkpoint records of one log: how many rows it held, and the last of them
    (at most TAIL_ROWS lines, without their newlines)."""

    count: int
    tail: tuple[str, ...] = ()


def _spans(first: int, last: int) -> str:
    """Rows `first`..`last` (1-based) in words: 'row 8', 'rows 3-8'."""
    return f"row {first}" if first == last else f"rows {first}-{last}"


def repair_line(path: pathlib.Path, recorded: int, held: int, torn: TornLine | None,
                restored: int, lost: int) -> str:
    """The one line a resume says when `path` holds fewer of the `recorded` rows than the
    checkpoint counted: `held` of them were there, the next `lost` could not be put back, the
    `restored` after those came from the checkpoint's record."""
    if not path.exists() and held == 0:
        state = f"{path} is missing ({recorded} rows recorded)"
    else:
        cut = f", line {torn.line} half-written" if torn is not None else ""
        state = f"{path} held {held} of the {recorded} rows the checkpoint recorded{cut}"
    parts = []
    if restored:
        parts.append(f"restored {_spans(recorded - restored + 1, recorded)} from the checkpoint")
    if lost:
        parts.append(f"{_spans(held + 1, held + lost)} could not be restored (the checkpoint "
                     f"keeps the last {TAIL_ROWS} only)")
    return f"{state}: {'; '.join(parts)}"


def _json_value(value):
    # Non-finite floats are not JSON; write them as strings so a NaN row stays readable.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends rows to `<run_dir>/metrics.jsonl` (one `write` per row, nothing buffered) and
    mirrors them to wandb; `synced` makes them durable for a checkpoint."""

    def __init__(self, run_dir: pathlib.Path, wandb_run=None):
        self.path = pathlib.Path(run_dir) / METRICS_FILE
        metrics = read_metrics(run_dir)
        self.rows_written = len(metrics.rows)
        self.tail = deque((line[:-1].decode() for line in metrics.lines[-TAIL_ROWS:]),
                          maxlen=TAIL_ROWS)
        self.wandb_run = wandb_run
        self.directory_synced = False

    def truncate(self, num_rows: int, tail: tuple[str, ...] = (), say=print) -> None:
        """Leaves the file holding the `num_rows` rows a checkpoint counted, `tail` being the
        last of them as it recorded them: rows after those are dropped (the resumed run redoes
        them) and so is a torn last line, saying so; rows the file lost are put back from
        `tail`, and what is not there is said in one line."""
        metrics = read_metrics(self.path.parent)
        lines = metrics.lines[:num_rows]
        held = len(lines)
        first_in_tail = num_rows - len(tail)
        restored = tail[max(held - first_in_tail, 0):] if held < num_rows else ()
        lost = max(first_in_tail - held, 0) if held < num_rows else 0
        if held < num_rows:
            say(repair_line(self.path, num_rows, held, metrics.torn, len(restored), lost))
        elif metrics.torn is not None:
            say(f"dropped {metrics.torn}")
        lines += [(line + "\n").encode() for line in restored]
        if lines != metrics.lines or metrics.torn is not None or not self.path.exists():
            durable.write_bytes(self.path, b"".join(lines))
        self.rows_written = len(lines)
        self.tail = deque((line[:-1].decode() for line in lines[-TAIL_ROWS:]), maxlen=TAIL_ROWS)

    def write(self, row: dict) -> None:
        row = {key: _json_value(value) for key, value in row.items()}
        line = json.dumps(row)
        try:
            append_line(self.path, (line + "\n").encode())
        except OSError as error:
            raise durable.write_error(self.path, durable.os_error_text(error)) from None
        self.rows_written += 1
        self.tail.append(line)
        if self.wandb_run is not None:
            # Scalars only: an evaluation's per-episode lists stay in the file.
            self.wandb_run.log({f"{row['phase']}/{key}" if key not in ("env_step", "phase")
                                else key: value for key, value in row.items()
                                if key != "phase" and not isinstance(value, list)})

    def synced(self) -> LoggedRows:
        """Flushes the rows written so far to the disk -> what a checkpoint records of them
        (WriteError if the disk refuses)."""
        if self.path.exists():
            try:
                durable.sync_file(self.path)
                if not self.directory_synced:  # the file's own entry, once
                    durable.sync_directory(self.path.parent)
                    self.directory_synced = True
            except OSError as error:
                raise durable.write_error(self.path, durable.os_error_text(error)) from None
        return LoggedRows(self.rows_written, tuple(self.tail))

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def start_wandb(run_dir: pathlib.Path, run_id: str, name: str, config: dict, mode: str,
                project: str, entity: str | None, group: str | None, concurrent: bool = False,
                quiet: bool = True):
    """A wandb run logging into `<run_dir>/wandb` (resumed by id), or None if wandb is absent.

    concurrent: the process holds several runs at once (one per seed of a multi-seed run).
    """
    try:
        import wandb
    except ImportError:
        print("wandb is not installed: metrics go to metrics.jsonl only", file=sys.stderr)
        return None
    several = dict(reinit="create_new") if concurrent else {}
    # quiet: no banner, sync hints or summary from wandb, at start or at exit.
    run = wandb.init(project=project, entity=entity, group=group, name=name, id=run_id,
                     resume="allow", mode=mode, dir=str(run_dir), config=config,
                     settings=wandb.Settings(silent=quiet), **several)
    # Every series is plotted against env steps; pretraining rows against their update count.
    run.define_metric("env_step")
    run.define_metric("pretrain/pretrain_update")
    run.define_metric("pretrain/*", step_metric="pretrain/pretrain_update")
    for phase in ("collect", "train", "eval"):
        run.define_metric(f"{phase}/*", step_metric="env_step")
    return run


def new_wandb_id() -> str:
    return os.urandom(4).hex()


class Progress:
    """One tqdm bar per phase (env steps; updates in pretraining) with its rate and ETA, the
    whole run's ETA and the last evaluation's return."""

    UNITS = {"collect": "env step", "pretrain": "update", "train": "env step"}

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.postfix = {}

    def start(self, phase: str, done: int, total: int) -> None:
        self.close()
        if self.enabled:
            self.bar = tqdm(total=total, initial=done, desc=phase, unit=self.UNITS[phase],
                            unit_scale=True, dynamic_ncols=True, smoothing=0.05,
                            file=sys.stderr)
            self.bar.set_postfix(self.postfix, refresh=False)

    def advance(self, amount: int, env_step: int, run_eta: float | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(amount)
        if self.bar.unit != "env step":
            self.postfix["env_step"] = env_step
        if run_eta is not None:
            self.postfix["run_eta"] = tqdm.format_interval(run_eta)
        self.bar.set_postfix(self.postfix, refresh=False)

    def eval_done(self, stochastic_return: float) -> None:
        self.postfix["eval_return"] = f"{stochastic_return:.1f}"

    def doing(self, what: str | None) -> None:
        """Shows on the bar what the run is busy with between its steps (a checkpoint, an
        evaluation, pictures) until the next call; None clears it."""
        if what is None:
            self.postfix.pop("now", None)
        else:
            self.postfix["now"] = what
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=True)

    def write(self, line: str) -> None:
        """A line on stderr that does not break the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.postfix.pop("env_step", None)
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunEta:
    """Seconds left in the whole run from the rates measured so far: each phase's seconds
    per unit (agent step; update in pretraining), and, for a phase that has no rate of its own
    yet, its step timed once compiled (`timed`: pretraining's seconds per update, the fused
    update's). An agent step of training costs an env step of collection and a fused update
    every `update_every` agent steps; before the fused update is timed, two pretraining
    updates (it does the latent update and about as much again for SAC). Evaluations are not
    counted."""

    def __init__(self, update_every: int = 1, updates_per_step: int = 1):
        self.seconds_per: dict[str, float] = {}
        self.timings: dict[str, float] = {}  # {"pretraining" | "fused update": seconds/update}
        self.updates_per_agent_step = updates_per_step / update_every
        self.mark = None

    def start(self, phase: str, done: int) -> None:
        self.mark = (phase, done, time.monotonic())

    def timed(self, step: str, seconds_per_update: float) -> None:
        """`step`'s seconds per update, timed on its own (a background warm-up)."""
        self.timings[step] = seconds_per_update

    def remaining(self, done: int, left: dict[str, int]) -> float | None:
        """`done`: the current phase's units so far; `left`: {phase: units left}."""
        if self.mark is None:
            return None
        phase, start, started = self.mark
        if done > start:
            self.seconds_per[phase] = (time.monotonic() - started) / (done - start)
        per = dict(self.seconds_per)
        if "pretrain" not in per and "pretraining" in self.timings:
            per["pretrain"] = self.timings["pretraining"]
        update = self.timings.get("fused update", 2 * per["pretrain"] if "pretrain" in per
                                  else None)
        if "train" not in per and "collect" in per and update is not None:
            per["train"] = per["collect"] + self.updates_per_agent_step * update
        if any(count > 0 and name not in per for name, count in left.items()):
            return None
        return sum(count * per[name] for name, count in left.items() if count > 0)


class Stopwatch:
    """Wall time of the whole run, across resumed sessions."""

    def __init__(self, earlier_seconds: float = 0.0):
        self.earlier = earlier_seconds
        self.started = time.monotonic()

    def seconds(self) -> float:
        return self.earlier + time.monotonic() - self.started
