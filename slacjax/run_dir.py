"""A run dir's identity and preparation: which run it holds, whether to resume, one writer.

`open_run_dir(cfg)` checks the directory against the config, takes its lock (one writer per
run dir: `slacjax.run_lock`), and decides between a fresh start, a resume and a restart; only
then is anything in it written or deleted. A run dir that has or had a checkpoint (a damaged
one set aside included) is cleared only by `overwrite=true`. Every refusal is a
`LaunchError`: one line.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

from omegaconf import OmegaConf

from slacjax import checkpoint, durable, logger, run_lock
from slacjax.config import AgentOverrides, ExperimentConfig

CONFIG_FILE = "config.yaml"
MEDIA_DIR = "media"
CURVE_FILE = "learning_curve.png"
DIAGNOSTICS_FILE = "diagnostics.png"  # entropy, α, Q against the observed return, reward error


class LaunchError(Exception):
    """Bad input (run dir, checkpoint, host): one line for the user, nothing touched."""


def load_config(run_dir: pathlib.Path) -> ExperimentConfig:
    """The config saved in `run_dir` (typed and validated)."""
    path = run_dir / CONFIG_FILE
    try:
        if not path.read_bytes().strip():
            raise LaunchError(f"cannot read {path}: the file is empty")
    except OSError as error:
        raise LaunchError(f"cannot read {path}: {durable.os_error_text(error)}") from None
    try:
        saved = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(path))
        return OmegaConf.to_object(saved)
    except Exception as error:  # yaml, omegaconf and validation errors alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LaunchError(f"cannot read {path}: {reason}") from error


def save_config(cfg: ExperimentConfig, run_dir: pathlib.Path) -> None:
    """Writes the resolved config: the run dir path and every agent value spelled out."""
    resolved = dataclasses.replace(
        cfg, run_dir=str(run_dir), overwrite=False,
        agent=AgentOverrides(**dataclasses.asdict(cfg.agent_config())))
    durable.write_bytes(run_dir / CONFIG_FILE,
                        OmegaConf.to_yaml(OmegaConf.structured(resolved)).encode())


def seed_directory(run_dir: pathlib.Path, cfg: ExperimentConfig, index: int) -> pathlib.Path:
    """Where seed `index` of the run keeps its metrics, curve and media: the run dir itself
    for a single-seed run, else `seed<its seed>/`."""
    return run_dir if cfg.seeds == 1 else run_dir / f"seed{cfg.seed + index}"


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity_mismatch(saved: dict, wanted: dict) -> str | None:
    """What makes identity `wanted` a different run than `saved` (None: the same run)."""
    old, new = _flatten(saved), _flatten(wanted)
    differences = [f"{key}={old[key]} (run dir) vs {new[key]} (now)"
                   for key in old if old[key] != new.get(key)]
    return ", ".join(differences) or None


def _entries(run_dir: pathlib.Path) -> list[pathlib.Path]:
    """What the run dir holds besides its lock file."""
    return [entry for entry in run_dir.iterdir() if entry.name != run_lock.LOCK_FILE]


def describe_checkpoints(run_dir: pathlib.Path) -> tuple[int, str]:
    """-> (how many checkpoints, e.g. '3 checkpoints, the last at env step 160')."""
    if not (run_dir / checkpoint.CHECKPOINT_DIR).is_dir():
        return 0, "no checkpoint"
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        numbers = checkpoints.numbers()
        if not numbers:
            return 0, "no checkpoint"
        try:
            last = checkpoints.meta(numbers[-1])["counters"]["env_steps"]
            where = f", the last at env step {last}"
        except (checkpoint.CheckpointError, KeyError, TypeError):
            where = ""
        return len(numbers), f"{len(numbers)} checkpoint{'s' * (len(numbers) > 1)}{where}"
    finally:
        checkpoints.close()


def set_aside_checkpoints(run_dir: pathlib.Path) -> list[str]:
    """The names of the checkpoints `restore_newest` set aside as damaged in `run_dir`."""
    directory = run_dir / checkpoint.CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in directory.iterdir()
                  if checkpoint.DAMAGED_SUFFIX in entry.name)


def _rows(run_dir: pathlib.Path) -> str:
    """'8 rows of metrics' (or what else the metrics file is) for a message."""
    try:
        count = len(logger.read_rows(run_dir))
    except (logger.MetricsError, OSError):
        return f"a {logger.METRICS_FILE}"
    return f"{count} row{'s' * (count != 1)} of metrics"


def _clear(run_dir: pathlib.Path) -> None:
    """overwrite=true: empties a slacjax run dir, except the lock this process holds."""
    for entry in _entries(run_dir):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@dataclasses.dataclass
class RunDir:
    """An opened run dir: its path, the lock held on it, and whether to resume from it."""

    path: pathlib.Path
    lock: run_lock.RunLock
    resume: bool

    def close(self) -> None:
        self.lock.release()


def open_run_dir(cfg: ExperimentConfig, say=print) -> RunDir:
    """Checks `cfg.run_dir`, locks it, and prepares it -> RunDir; LaunchError if refused.

    Absent or empty: a fresh run. A run dir of the same run with a checkpoint: resume. With a
    config but no complete checkpoint (a crash before the first one): start over there. A
    run dir of another run, a foreign directory or one in use is refused; overwrite=true
    clears a slacjax run dir (saying what it deletes) and starts over.
    """
    path = pathlib.Path(cfg.run_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise LaunchError(f"run_dir {path} exists and is not a directory")
    if path.is_dir() and _entries(path) and not (path / CONFIG_FILE).exists():
        raise LaunchError(f"run_dir {path} is not empty and is not a slacjax run dir (no "
                          f"{CONFIG_FILE}); choose another run_dir")
    # Before anything is read for a decision: another writer may be changing it.
    try:
        lock = run_lock.acquire(path, "training")
    except run_lock.RunDirError as error:
        raise LaunchError(str(error)) from error
    try:
        return RunDir(path, lock, _decide(cfg, path, say))
    except BaseException:
        lock.release()
        raise


WAYS_ON = "pass overwrite=true to start over there (deleting it all), or choose another run_dir"


def _decide(cfg: ExperimentConfig, path: pathlib.Path, say) -> bool:
    """Resume? Clears the run dir first where the run starts over in it."""
    if not (path / CONFIG_FILE).exists():
        return False
    if cfg.overwrite:
        set_aside = set_aside_checkpoints(path)
        damaged = f" (and {len(set_aside)} damaged, set aside)" if set_aside else ""
        say(f"overwrite=true: deleting {path}'s {describe_checkpoints(path)[1]}{damaged}, its "
            "metrics and media")
        _clear(path)
        return False
    try:
        saved = load_config(path)
    except LaunchError as error:
        raise LaunchError(f"{error}; {WAYS_ON}") from None
    mismatch = identity_mismatch(saved.identity(), cfg.identity())
    if mismatch:
        raise LaunchError(f"run_dir {path} belongs to another run ({mismatch}); choose "
                          "another run_dir, or pass overwrite=true to start over there")
    if describe_checkpoints(path)[0] == 0:
        set_aside = set_aside_checkpoints(path)
        if set_aside:  # it had checkpoints: what they kept is not ours to delete
            raise LaunchError(
                f"run dir {path} has no checkpoint that restores, only damaged ones set aside "
                f"({', '.join(set_aside)} in {checkpoint.CHECKPOINT_DIR}/) and {_rows(path)}; "
                f"{WAYS_ON}")
        say(f"run dir {path} has a config but no complete checkpoint (the run stopped before "
            "its first one): starting it over")
        _clear(path)
        return False
    return True
