"""Metrics between rows: summed on the device, checked for NaN/inf, written as phase rows."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from slacjax.logger import Stopwatch
from slacjax.run_state import Counters, SeedCounters
from slacjax.steps import Steps


class NonFiniteMetric(Exception):
    """Metric means that are not finite: their `names` (sorted), the `agents` (seeds' places)
    where the first of them is, and `detail`: its value and update count at the first."""

    def __init__(self, names: list[str], agents: list[int], detail: str):
        super().__init__(f"non-finite {', '.join(names)} {detail} of agent(s) {agents}")
        self.names, self.agents, self.detail = names, agents, detail


class PhaseRows:
    """The rows of the collect, pretrain and train phases, one per seed: the seeds' metrics
    since the last row, summed on the device ({name: [N]}) with the weight (updates) they
    hold until a row or a checkpoint reads them, and the env step rate between rows."""

    def __init__(self, steps: Steps, num_seeds: int, action_dim: int):
        self.steps, self.num_seeds, self.action_dim = steps, num_seeds, action_dim
        self.sums: dict | None = None
        self.weight = 0
        self.rate_mark = (time.monotonic(), 0)  # (when, env steps) the rate counts from

    def mark_rate(self, env_steps: int) -> None:
        """The env step rate of the next row counts from now, at `env_steps`."""
        self.rate_mark = (time.monotonic(), env_steps)

    def add(self, metrics: dict, weight: int) -> None:
        """Adds `metrics` ({name: [N]}), each a mean over `weight` updates."""
        if self.sums is None:
            self.sums = jax.tree.map(jnp.zeros_like, metrics)
        self.sums = self.steps.accumulate(self.sums, metrics, np.float32(weight))
        self.weight += weight

    def means(self, updates: jax.Array) -> list[dict]:
        """Each seed's means ({name: float} per seed; empty before any `add`);
        NonFiniteMetric if one is NaN/inf, naming the seed's update count (`updates` [N],
        read only then)."""
        if self.sums is None:
            return [{} for _ in range(self.num_seeds)]
        means = {name: np.asarray(value, np.float64) / self.weight
                 for name, value in jax.device_get(self.sums).items()}
        bad = sorted(name for name, value in means.items() if not np.isfinite(value).all())
        if bad:
            agents = np.flatnonzero(~np.isfinite(means[bad[0]])).tolist()
            count = int(np.asarray(jax.device_get(updates))[agents[0]])
            raise NonFiniteMetric(bad, agents, f"({means[bad[0]][agents[0]]}, update {count})")
        return [{name: float(value[index]) for name, value in means.items()}
                for index in range(self.num_seeds)]

    def kept(self) -> dict | None:
        """The sums as a checkpoint keeps them ({name: [N] floats}); None before any `add`."""
        if self.sums is None:
            return None
        return {name: np.asarray(value).tolist()
                for name, value in jax.device_get(self.sums).items()}

    def restore(self, kept: dict | None, weight: int) -> None:
        """The sums a checkpoint kept (see `kept`) and their weight."""
        if kept is not None:
            self.sums = {name: jnp.asarray(value, jnp.float32) for name, value in kept.items()}
        self.weight = weight

    def take(self, counters: Counters, seeds: list[SeedCounters], means: list[dict],
             stopwatch: Stopwatch) -> list[dict]:
        """Each seed's row (`phase_row`) of `means` (see `means`) with the env step rate
        since the last; the sums and the rate start anew."""
        now = time.monotonic()
        seconds, steps = now - self.rate_mark[0], counters.env_steps - self.rate_mark[1]
        rate = round(steps / seconds, 3) if seconds > 0 else None
        rows = [phase_row(counters, seed, seed_means, round(stopwatch.seconds(), 3), rate,
                          self.action_dim) for seed, seed_means in zip(seeds, means)]
        self.sums, self.weight = None, 0
        self.rate_mark = (now, counters.env_steps)
        return rows


def phase_row(counters: Counters, seed: SeedCounters, means: dict, wall_time: float,
              env_steps_per_s: float | None, action_dim: int) -> dict:
    """One seed's row of the current phase: the counters, wall time and metric means; in
    pretraining the update count, else the env step rate, the seed's last episode's returns
    and the simulator failures so far."""
    c = counters
    row = dict(phase=c.phase, env_step=c.env_steps, agent_step=c.agent_steps,
               wall_time=wall_time, **means)
    if c.phase == "pretrain":
        row["pretrain_update"] = c.pretrain_updates
    else:
        row["env_steps_per_s"] = env_steps_per_s
        row["episode_return"] = seed.last_episode_return
        row["discounted_return"] = seed.last_episode_discounted_return
        # The uniform policy's entropy over [-1, 1]^A: the most a squashed policy's can be.
        row["entropy_uniform"] = action_dim * math.log(2.0)
        row["physics_errors"] = c.physics_errors
    return row
