"""SLAC's published DMC learning curves (the authors' result files, alexlee-gk/slac
data/slac/; per task the decoder variance their plots show), shipped as
`slacjax/data/slac_reference.csv` and made by `scripts/make_reference.py`.
"""

from __future__ import annotations

import csv
import functools
import pathlib
from typing import NamedTuple, Optional

import numpy as np

DATA_FILE = pathlib.Path(__file__).resolve().parent / "data" / "slac_reference.csv"
COLUMNS = ("task", "action_repeat", "decoder_var", "env_step", "n_seeds", "mean", "std", "min",
           "max", "ci_low", "ci_high", "returns", "source", "commit")


class Curve(NamedTuple):
    """One task's published curve. Arrays are [S] over the logged env steps; `returns[s]` holds
    the trials' own returns at env step s ([n_seeds[s]]: a few trials miss an evaluation);
    the spread columns are across those trials (`std` the population standard deviation,
    `ci_low`/`ci_high` a 95% bootstrap interval of the mean)."""

    task: str
    action_repeat: int
    decoder_var: float
    n_seeds: np.ndarray
    env_step: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    returns: tuple[np.ndarray, ...]
    source: str
    commit: str

    @property
    def label(self) -> str:
        """The legend entry: where the curve comes from."""
        return f"SLAC paper ({self.source.split('/data/')[0]}@{self.commit[:7]})"

    def returns_at(self, env_step: int) -> Optional[np.ndarray]:
        """The trials' returns logged at exactly `env_step`, None if it is not a logged one."""
        index = np.searchsorted(self.env_step, env_step)
        if index < self.env_step.size and self.env_step[index] == env_step:
            return self.returns[index]
        return None


@functools.lru_cache(maxsize=1)
def _curves() -> dict[str, Curve]:
    with DATA_FILE.open() as file:
        rows = list(csv.DictReader(file))
    curves = {}
    for task in dict.fromkeys(row["task"] for row in rows):
        mine = sorted((row for row in rows if row["task"] == task),
                      key=lambda row: int(row["env_step"]))
        def column(name, mine=mine):
            return np.array([float(row[name]) for row in mine])

        first = mine[0]
        curves[task] = Curve(
            task=task, action_repeat=int(first["action_repeat"]),
            decoder_var=float(first["decoder_var"]), n_seeds=column("n_seeds").astype(int),
            env_step=column("env_step").astype(int), mean=column("mean"), std=column("std"),
            min=column("min"), max=column("max"), ci_low=column("ci_low"),
            ci_high=column("ci_high"),
            returns=tuple(np.array([float(value) for value in row["returns"].split()])
                          for row in mine),
            source=first["source"], commit=first["commit"])
    return curves


def tasks() -> tuple[str, ...]:
    """The tasks with a published curve."""
    return tuple(_curves())


def curve(task: str) -> Optional[Curve]:
    """The published curve of `task`, None for a task without one."""
    return _curves().get(task)


def mean_at(task: str, env_step: int) -> Optional[float]:
    """The paper's mean return at `env_step`: the logged value at a logged env step (every
    10,000), linearly interpolated between the two logged env steps around any other; None
    for a task without a curve or an env step outside the logged range (0 to 2M)."""
    found = curve(task)
    if found is None or not found.env_step[0] <= env_step <= found.env_step[-1]:
        return None
    return float(np.interp(env_step, found.env_step, found.mean))
