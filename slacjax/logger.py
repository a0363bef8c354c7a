"""Where a run's numbers go: a JSONL file in the run dir always, wandb when enabled, a progress bar.

One row per log interval (and one per evaluation). Rows are flat dicts of JSON scalars (an
evaluation row also holds its episodes' returns as lists); the `phase` key says which phase
wrote them (collect / pretrain / train / eval). wandb is imported only when enabled, so a run
works where it is absent.

A row is complete once its newline is written: each is appended with one `write` of the whole
line, so a kill or a full disk can leave at most a torn last line (no newline), which readers
skip and a resume drops. A bad line anywhere else is an error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"


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


def _json_value(value):
    # Non-finite floats are not JSON; write them as strings so a NaN row stays readable.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends rows to `<run_dir>/metrics.jsonl` (one `write` per row, nothing buffered) and
    mirrors them to wandb."""

    def __init__(self, run_dir: pathlib.Path, wandb_run=None):
        self.path = pathlib.Path(run_dir) / METRICS_FILE
        self.rows_written = len(read_rows(run_dir))
        self.wandb_run = wandb_run

    def truncate(self, num_rows: int) -> None:
        """Keeps the first `num_rows` rows: what a resumed run redoes must not appear twice. A
        torn last line is dropped, with one line saying so."""
        metrics = read_metrics(self.path.parent)
        if metrics.torn is not None:
            print(f"dropped {metrics.torn}", flush=True)
        lines = metrics.lines[:num_rows]
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(b"".join(lines))
        os.replace(temporary, self.path)
        self.rows_written = len(lines)

    def write(self, row: dict) -> None:
        row = {key: _json_value(value) for key, value in row.items()}
        append_line(self.path, (json.dumps(row) + "\n").encode())
        self.rows_written += 1
        if self.wandb_run is not None:
            # Scalars only: an evaluation's per-episode lists stay in the file.
            self.wandb_run.log({f"{row['phase']}/{key}" if key not in ("env_step", "phase")
                                else key: value for key, value in row.items()
                                if key != "phase" and not isinstance(value, list)})

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
    per unit (agent step; update in pretraining). Before training has a rate of its own, an
    agent step is taken to cost an env step of collection plus two pretraining updates (the
    fused update does the latent update and about as much again for SAC); evaluations are
    not counted."""

    def __init__(self):
        self.seconds_per: dict[str, float] = {}
        self.mark = None

    def start(self, phase: str, done: int) -> None:
        self.mark = (phase, done, time.monotonic())

    def remaining(self, done: int, left: dict[str, int]) -> float | None:
        """`done`: the current phase's units so far; `left`: {phase: units left}."""
        if self.mark is None:
            return None
        phase, start, started = self.mark
        if done > start:
            self.seconds_per[phase] = (time.monotonic() - started) / (done - start)
        per = dict(self.seconds_per)
        if "train" not in per and {"collect", "pretrain"} <= set(per):
            per["train"] = per["collect"] + 2 * per["pretrain"]
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
