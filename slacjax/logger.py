"""Where a run's numbers go: a JSONL file in the run dir always, wandb when enabled, a progress bar.

One row per log interval (and one per evaluation). Rows are flat dicts of JSON scalars; the
`phase` key says which phase wrote them (collect / pretrain / train / eval). wandb is imported
only when enabled, so a run works where it is absent.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"


def read_rows(run_dir: pathlib.Path) -> list[dict]:
    """Every row logged in `run_dir` so far (none if nothing was logged)."""
    path = pathlib.Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    with path.open() as file:
        return [json.loads(line) for line in file if line.strip()]


def _json_value(value):
    # Non-finite floats are not JSON; write them as strings so a NaN row stays readable.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends rows to `<run_dir>/metrics.jsonl` (flushed per row) and mirrors them to wandb."""

    def __init__(self, run_dir: pathlib.Path, wandb_run=None):
        self.path = pathlib.Path(run_dir) / METRICS_FILE
        self.rows_written = len(read_rows(run_dir))
        self.wandb_run = wandb_run

    def truncate(self, num_rows: int) -> None:
        """Keeps the first `num_rows` rows: what a resumed run redoes must not appear twice."""
        rows = read_rows(self.path.parent)[:num_rows]
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(temporary, self.path)
        self.rows_written = len(rows)

    def write(self, row: dict) -> None:
        row = {key: _json_value(value) for key, value in row.items()}
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")
        self.rows_written += 1
        if self.wandb_run is not None:
            self.wandb_run.log({f"{row['phase']}/{key}" if key not in ("env_step", "phase")
                                else key: value for key, value in row.items()
                                if key != "phase"})

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
