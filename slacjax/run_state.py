"""Where a run stands (its counters), and how a checkpoint keeps and gives it back.

A checkpoint holds the stacked TrainState and Replay ([N, ...], N seeds) and a JSON meta:
the counters, each seed's counters, the rows each seed's log held (and the last of them), the
metric sums since the last row, the action size and the run's identity. Checkpoints written
before the seed axis (format 1: one seed, no leading axis) are restored into it.

`restore_newest` is the one way a checkpoint is chosen and read, for training and evaluation
alike: the newest one whose files match their record, whose meta is of this run's shape and
whose arrays read; each one passed over is named in one line with its file and the cause.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp

from slacjax import checkpoint
from slacjax.config import ExperimentConfig
from slacjax.logger import LoggedRows
from slacjax.run_dir import CONFIG_FILE, LaunchError, identity_mismatch
from slacjax.steps import Steps

FORMAT = 2


@dataclasses.dataclass
class Counters:
    """The run's position; env steps advance per agent step by the most any seed took."""

    phase: str = "collect"  # collect | pretrain | train | done
    env_steps: int = 0
    agent_steps: int = 0
    pretrain_updates: int = 0
    evals: int = 0
    last_log: int = 0  # env step (pretrain: update) of the last row, for `due`
    last_eval: int = 0
    last_checkpoint: int = 0  # env step (pretrain: update) of the last periodic checkpoint
    physics_errors: int = 0  # episodes the simulator ended with a PhysicsError
    wall_seconds: float = 0.0
    wandb_id: str = ""

    def position(self) -> int:
        """Where the phase is: updates in pretraining, else env steps (what rows, periodic
        checkpoints and the progress bar count)."""
        return self.pretrain_updates if self.phase == "pretrain" else self.env_steps


@dataclasses.dataclass
class SeedCounters:
    """One seed's own position."""

    episodes: int = 0  # training episodes started: the next one's index
    last_episode_return: float | None = None
    # Its discounted return-to-go Σ_k γ^k r_t+k averaged over its steps: what the critic's
    # Q estimates (up to the entropy bonus and the time limit), measured.
    last_episode_discounted_return: float | None = None


@dataclasses.dataclass
class Record:
    """Everything of a run that lives on the host and must survive a restart."""

    counters: Counters
    seeds: list[SeedCounters]
    log_rows: list[LoggedRows]
    metric_sum: dict | None = None  # {name: [N] floats} since the last row
    metric_weight: int = 0


def resume_point(checkpoints: checkpoint.Checkpoints | None) -> str:
    """What a rerun would resume from: the newest checkpoint as on disk now (a save may be
    under way), or nothing before the checkpoints are open or the first is written."""
    latest = checkpoints.latest() if checkpoints is not None else None
    return "nothing: it starts over" if latest is None else str(checkpoints.path(latest))


def last_good(checkpoints: checkpoint.Checkpoints | None) -> str:
    """The newest checkpoint, which a run that cannot go on keeps, in words."""
    latest = checkpoints.latest() if checkpoints is not None else None
    return (f"the last good checkpoint is {checkpoints.path(latest)}" if latest is not None
            else "no checkpoint was written yet")


def due(now: int, last: int, every: int) -> bool:
    """Whether a multiple of `every` was crossed since `last`."""
    return now // every > last // every


def abstract_trees(steps: Steps, num_seeds: int, capacity: int, stacked: bool = True):
    """The state's and the replay's shapes and dtypes for `steps` of `num_seeds` seeds,
    without computing them; `stacked` False drops the seed axis (format 1 checkpoints)."""
    keys = jax.ShapeDtypeStruct((num_seeds, 2), jnp.uint32)
    trees = (jax.eval_shape(steps.init_state, keys),
             jax.eval_shape(functools.partial(steps.init_replay, capacity)))
    if stacked:
        return trees
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), trees)


def with_seed_axis(trees, meta: dict):
    """Restored trees with the seed axis: format 1 checkpoints (one seed) lack it."""
    if meta.get("format", 1) == 1:
        return jax.tree.map(lambda leaf: leaf[None], trees)
    return trees


def save(checkpoints: checkpoint.Checkpoints, state, replay, record: Record, action_dim: int,
         cfg: ExperimentConfig) -> pathlib.Path:
    """Writes one checkpoint of the run -> its path (CheckpointWriteError if it cannot)."""
    meta = dict(format=FORMAT, counters=dataclasses.asdict(record.counters),
                seed_counters=[dataclasses.asdict(seed) for seed in record.seeds],
                log_rows=[rows.count for rows in record.log_rows],
                row_tails=[list(rows.tail) for rows in record.log_rows],
                metric_sum=record.metric_sum,
                metric_weight=record.metric_weight, action_dim=action_dim,
                identity=cfg.identity())
    return checkpoints.save(state, replay, meta, env_step=record.counters.env_steps)


def _record(meta: dict, num_seeds: int) -> Record:
    """The Record of a checkpoint's meta (either format); KeyError/TypeError/ValueError/
    AttributeError for a meta of another shape."""
    counters = dict(meta["counters"])
    if meta.get("format", 1) == 1:
        # Format 1 kept one seed's episode count and return among the run's counters (and,
        # for several seeds, each seed's in seed_counters).
        first = SeedCounters(counters.pop("episodes"), counters.pop("last_episode_return"))
        counters.pop("last_eval_return")  # the progress bar's; not kept any more
        seeds = [SeedCounters(**values) for values in meta.get("seed_counters", [])] or [first]
        counts = [int(rows) for rows in
                  (meta["log_rows"] if isinstance(meta["log_rows"], list)
                   else [meta["log_rows"]])]
        counters.setdefault("physics_errors", 0)
    else:
        seeds = [SeedCounters(**values) for values in meta["seed_counters"]]
        counts = [int(rows) for rows in meta["log_rows"]]
    tails = meta.get("row_tails") or [[] for _ in counts]
    if len(seeds) != num_seeds or len(counts) != num_seeds or len(tails) != num_seeds:
        raise ValueError(f"{len(seeds)} seeds' counters, {num_seeds} expected")
    if not all(isinstance(tail, list) and all(isinstance(line, str) for line in tail)
               for tail in tails):
        raise ValueError("row_tails is not a list of lines per seed")
    log_rows = [LoggedRows(count, tuple(tail)) for count, tail in zip(counts, tails)]
    sums = meta["metric_sum"]
    if sums is not None and meta.get("format", 1) == 1 and num_seeds == 1:
        sums = {name: [value] for name, value in sums.items()}
    if sums is not None and not isinstance(sums, dict):
        raise ValueError("metric_sum is not a mapping")
    record = Record(Counters(**counters), seeds, log_rows, sums, int(meta["metric_weight"]))
    _check_counters(record.counters)
    return record


_COUNTER_TYPES = {field.name: field.type for field in dataclasses.fields(Counters)}


def _check_counters(counters: Counters) -> None:
    """ValueError unless every counter has its type (a meta of another shape can hold, say,
    a list where a count belongs, which would fail only later, mid-run)."""
    for name, kind in _COUNTER_TYPES.items():
        value = getattr(counters, name)
        wanted = {"str": str, "int": int, "float": (int, float)}[kind]
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ValueError(f"counter {name} is {value!r}")
    if counters.phase not in ("collect", "pretrain", "train", "done"):
        raise ValueError(f"phase {counters.phase!r}")


def read_record(meta: Any, cfg: ExperimentConfig, action_dim: int | None = None) -> Record:
    """The Record of a checkpoint's meta, checked against the run `cfg` (and its action size,
    where known): CheckpointError naming what in its meta file is of another shape,
    CheckpointRefused if it belongs to another run (another task or agent: `cfg`'s identity)
    or to a newer slacjax."""
    try:
        if not isinstance(meta, dict):
            raise TypeError(f"a JSON {type(meta).__name__}, not an object")
        if int(meta.get("format", 1)) > FORMAT:
            raise checkpoint.CheckpointRefused(
                f"is of format {meta['format']}, written by a newer slacjax (this one reads up "
                f"to {FORMAT})")
        record = _record(meta, cfg.seeds)
        if int(meta["action_dim"]) <= 0:
            raise ValueError(f"action size {meta['action_dim']}")
        identity = meta["identity"]
        if not isinstance(identity, dict):
            raise TypeError("its identity is not a mapping")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        detail = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise checkpoint.CheckpointError(f"{checkpoint.META_FILE} is of another shape "
                                         f"({detail})") from error
    # Checkpoints written before `seeds` existed are of one seed.
    mismatch = identity_mismatch({"seeds": 1, **identity}, cfg.identity())
    if mismatch:
        raise checkpoint.CheckpointRefused(
            f"belongs to another run than {CONFIG_FILE} says ({mismatch}); choose another "
            "run_dir, or pass overwrite=true")
    if action_dim is not None and int(meta["action_dim"]) != action_dim:
        raise checkpoint.CheckpointError(f"{checkpoint.META_FILE} is of another shape (action "
                                         f"size {meta['action_dim']}, {action_dim} expected)")
    return record


@dataclasses.dataclass
class Restored:
    """A checkpoint read back: where it is, its trees (stacked [N, ...]; the replay None where
    it was not read), what its meta recorded, and the action size it was written for."""

    path: pathlib.Path
    state: Any
    replay: Any
    record: Record
    meta: dict
    action_dim: int


def restore_newest(checkpoints: checkpoint.Checkpoints, cfg: ExperimentConfig,
                   steps_for: Callable[[int], Steps], action_dim: int | None = None,
                   with_replay: bool = True, accept: Callable[[Record], bool] | None = None,
                   say=print) -> Restored | None:
    """The newest checkpoint that restores completely -> Restored, or None if there is none.

    `steps_for(action size)` gives the steps whose trees a checkpoint holds; `action_dim` (if
    known) must be the checkpoint's; `accept(record)` False passes a checkpoint over without
    a word (e.g. one at another env step). A damaged one (its files, its file record, a meta
    file of another shape) is skipped with one line naming it, the file and the cause (and
    set aside where the checkpoints are writable); LaunchError if one belongs to another run
    or an intact one does not restore.
    """
    def abstract_for(meta):
        record = read_record(meta, cfg, action_dim)
        if accept is not None and not accept(record):
            return None
        state, replay = abstract_trees(steps_for(int(meta["action_dim"])), cfg.seeds,
                                       cfg.replay_capacity, stacked=meta.get("format", 1) > 1)
        return state, (replay if with_replay else None)

    try:
        restored = checkpoints.restore_newest(abstract_for, say=say)
    except checkpoint.CheckpointError as error:
        raise LaunchError(f"{error}; the run dir was left as it is") from error
    except checkpoint.CheckpointRefused as error:
        raise LaunchError(str(error)) from error
    if restored is None:
        return None
    number, state, replay, meta = restored
    state, replay = with_seed_axis((state, replay), meta)
    return Restored(checkpoints.path(number), state, replay, read_record(meta, cfg), meta,
                    int(meta["action_dim"]))


def restore(checkpoints: checkpoint.Checkpoints, steps: Steps, action_dim: int,
            cfg: ExperimentConfig, say=print):
    """The newest checkpoint that restores completely (skipping bad ones, saying so) ->
    (its path, state, replay, Record); LaunchError if none does or it is of another run."""
    restored = restore_newest(checkpoints, cfg, lambda _: steps, action_dim, say=say)
    if restored is None:
        raise LaunchError(f"no checkpoint in {checkpoints.directory} restores (see above); "
                          "the run dir was left as it is: pass overwrite=true to start over "
                          "there, or choose another run_dir")
    return restored.path, restored.state, restored.replay, restored.record
