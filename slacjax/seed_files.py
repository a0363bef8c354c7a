"""Each seed's files in a run dir: its metrics log and wandb run, curves and reconstructions."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
from omegaconf import OmegaConf

from slacjax import durable, logger, plots
from slacjax.config import ExperimentConfig
from slacjax.run_dir import (
    CONFIG_FILE,
    CURVE_FILE,
    DIAGNOSTICS_FILE,
    MEDIA_DIR,
    LaunchError,
    seed_directory,
)


@dataclasses.dataclass
class SeedFiles:
    """Where one seed's rows, curves and pictures go (the run dir itself for one seed)."""

    seed: int
    directory: pathlib.Path
    log: logger.MetricsLog


class RunFiles:
    """The seeds' files of a run, in seed order (`seeds` [N] SeedFiles)."""

    def __init__(self, run_dir: pathlib.Path, cfg: ExperimentConfig, seeds: list[int],
                 log_rows: list[logger.LoggedRows] | None):
        """Makes each seed's directory, removes what writers killed mid-write left there, and
        opens its metrics log. A resumed run passes `log_rows`, what its checkpoint recorded
        of each seed's log: what the run redoes must not appear twice, what the file lost is
        put back. LaunchError for a metrics file with a bad line; WriteError."""
        self.run_dir, self.cfg = run_dir, cfg
        self.seeds: list[SeedFiles] = []
        durable.remove_partials(run_dir)  # config.yaml, the seeds' curve
        for index, seed in enumerate(seeds):
            directory = seed_directory(run_dir, cfg, index)
            make_directory(directory)
            for folder in (directory, directory / MEDIA_DIR):
                durable.remove_partials(folder)
            try:
                log = logger.MetricsLog(directory)
                if log_rows is not None:
                    log.truncate(log_rows[index].count, log_rows[index].tail)
            except logger.MetricsError as error:
                raise LaunchError(f"{error}; repair or delete that line to resume, or pass "
                                  "overwrite=true to start over") from None
            self.seeds.append(SeedFiles(seed, directory, log))

    def synced_rows(self) -> list[logger.LoggedRows]:
        """Each seed's rows flushed to the disk -> what a checkpoint records of them ([N])."""
        return [files.log.synced() for files in self.seeds]

    def write_rows(self, rows: list[dict]) -> None:
        """One row per seed (rows [N])."""
        for files, row in zip(self.seeds, rows):
            files.log.write(row)

    def write_evaluation(self, rows: list[dict], started: float, stopwatch: logger.Stopwatch,
                         paper: float | None) -> None:
        """Each seed's evaluation row (rows [N]), finished with the seconds since `started`,
        the run's wall time and the paper's return, then its curves; the seeds' curve."""
        for files, row in zip(self.seeds, rows):
            row.update(eval_seconds=round(time.monotonic() - started, 3),
                       wall_time=round(stopwatch.seconds(), 3), paper_return=paper)
            files.log.write(row)
            self.write_curves(files)
        if len(self.seeds) > 1:
            self.write_seeds_curve()

    def write_curves(self, files: SeedFiles) -> None:
        """A seed's learning curve (beside the paper's) and diagnostics from its rows."""
        logged, task = logger.read_rows(files.directory), self.cfg.task
        title = f"{task}, seed {files.seed}"
        plots.learning_curve(logged, files.directory / CURVE_FILE, title=title, task=task)
        plots.diagnostics(logged, files.directory / DIAGNOSTICS_FILE, title=title)

    def write_seeds_curve(self) -> None:
        """The seeds' mean learning curve with its 95% bootstrap band, in the run dir."""
        task, first, last = self.cfg.task, self.seeds[0].seed, self.seeds[-1].seed
        plots.seeds_learning_curve(
            [logger.read_rows(files.directory) for files in self.seeds],
            self.run_dir / CURVE_FILE, task=task,
            title=f"{task}, seeds {first}-{last}: mean over seeds, 95% bootstrap CI")

    def write_reconstructions(self, truth: np.ndarray, posterior: np.ndarray,
                              prior: np.ndarray, name: str, title: str) -> None:
        """Per seed, its ground truth, posterior reconstruction and prior imagination of one
        replay sequence ([N, T+1, H, W, 3] each) as `name`.png and .gif in its media dir."""
        for index, files in enumerate(self.seeds):
            media = files.directory / MEDIA_DIR
            make_directory(media)
            plots.reconstruction_strip(
                plots.strip_rows(truth[index], posterior[index], prior[index]),
                media / f"{name}.png", media / f"{name}.gif", title=title)

    def start_wandb(self, wandb_id: str) -> None:
        """One wandb run per seed, mirroring its rows; several seeds' are grouped (by default
        under the run dir's name)."""
        cfg, several = self.cfg, len(self.seeds) > 1
        config = OmegaConf.to_container(OmegaConf.load(self.run_dir / CONFIG_FILE))
        for index, files in enumerate(self.seeds):
            files.log.wandb_run = logger.start_wandb(
                files.directory, name=f"{cfg.task}-seed{files.seed}", config=config,
                mode=cfg.wandb.mode, project=cfg.wandb.project, entity=cfg.wandb.entity,
                run_id=wandb_id + (f"-{index}" if several else ""),
                group=cfg.wandb.group or (self.run_dir.name if several else None),
                concurrent=several, quiet=cfg.wandb.quiet)

    def close(self) -> None:
        for files in self.seeds:
            files.log.close()


def make_directory(path: pathlib.Path) -> None:
    """`path` as a directory (WriteError, one line, if it cannot be made)."""
    try:
        path.mkdir(exist_ok=True)
    except OSError as error:
        raise durable.write_error(path, durable.os_error_text(error)) from None
