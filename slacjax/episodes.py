"""The seeds' training episodes: env resets and steps, their transitions, returns kept."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from slacjax.config import AgentConfig
from slacjax.replay import Replay
from slacjax.run_state import SeedCounters
from slacjax.seeding import stream_seed
from slacjax.steps import Steps


@dataclasses.dataclass(frozen=True)
class EnvSteps:
    """One agent step of every seed's env (N seeds)."""

    obs: np.ndarray  # [N, H, W, 3] uint8: the frames after it
    rewards: np.ndarray  # [N] float64
    terminated: np.ndarray  # [N] bool
    ended: np.ndarray  # [N] bool: terminated or truncated (time limit, simulator failure)
    env_steps: int  # the most env steps a seed took: the action repeat, fewer at an end
    physics_errors: int  # seeds whose simulator failed in it


class TrainingEpisodes:
    """The seeds' training episodes: one env per seed on the host and where its episode
    stands (the current frames, the rewards so far, whether it ended, the seed's
    `SeedCounters`); on the device, their transitions into the replay and, while acting,
    their acting windows (`history` [N]).

    A seed's episode begins at the agent step after its last one ended (every seed's at a
    phase's start) from the reset seed of (seed, 0, episode), so a resumed run replays it;
    when it ends, its returns go into the seed's counters, which the rows report.
    """

    def __init__(self, envs: list, seeds: list[int], steps: Steps, cfg: AgentConfig,
                 warn: Callable[[str], None]):
        self.envs, self.seeds, self.steps, self.warn = envs, seeds, steps, warn
        self.image_size, self.gamma = cfg.image_size, cfg.gamma
        self.action_dim = int(envs[0].action_space.shape[0])
        self.counters = [SeedCounters() for _ in seeds]
        self.obs = None  # the seeds' current frames [N, H, W, 3]; None: all begin anew
        self.rewards: list[list[float]] = [[] for _ in seeds]  # each current episode's
        self.over = np.zeros(len(seeds), bool)  # ended at the last step; begun at the next
        self.history = None

    def begin(self, replay: Replay, acting: bool) -> Replay:
        """Resets the envs whose episode is over (all after `cut`) -> `replay` with their
        first frames; with `acting`, fresh acting windows for them."""
        starting = np.ones(len(self.seeds), bool) if self.obs is None else self.over
        if not starting.any():
            return replay
        size = self.image_size
        frames = (np.zeros((len(self.seeds), size, size, 3), np.uint8) if self.obs is None
                  else self.obs.copy())
        for index in np.flatnonzero(starting):
            counters = self.counters[index]
            frames[index], _ = self.envs[index].reset(
                seed=stream_seed(self.seeds[index], 0, counters.episodes))
            counters.episodes += 1
            self.rewards[index] = []
        replay = self.add_starts(replay, frames, starting)
        if acting:
            self.history = self.steps.reset_history(None if starting.all() else self.history,
                                                    frames, starting)
        self.obs, self.over = frames, np.zeros(len(self.seeds), bool)
        return replay

    def step(self, replay: Replay, actions: np.ndarray, env_step: int,
             acting: bool) -> tuple[Replay, EnvSteps]:
        """Steps every seed's env with its action (actions [N, A]) -> (`replay` with the
        transitions, the step); with `acting`, the acting windows move on. A simulator
        failure ends that episode, with a line through `warn` naming the seed and
        `env_step`."""
        results = [env.step(action) for env, action in zip(self.envs, actions)]
        physics_errors = 0
        for seed, (*_, info) in zip(self.seeds, results):
            if "physics_error" in info:
                physics_errors += 1
                self.warn(f"seed {seed}: the simulator failed at env step {env_step} "
                          f"({info['physics_error']}); its episode ends there")
        terminated = np.array([result[2] for result in results], bool)
        step = EnvSteps(np.stack([result[0] for result in results]),
                        np.array([result[1] for result in results], np.float64), terminated,
                        terminated | np.array([result[3] for result in results], bool),
                        max(int(result[4]["env_steps"]) for result in results), physics_errors)
        replay = self.add_step(replay, actions, step)
        if acting:
            self.history = self.steps.push_history(self.history, actions, step.obs)
        self.obs = step.obs
        for episode_rewards, reward in zip(self.rewards, step.rewards):
            episode_rewards.append(float(reward))
        return replay, step

    def end(self, ended: np.ndarray) -> None:
        """Keeps the returns of the episodes that `ended` [N] bool in their seeds' counters;
        those seeds begin new episodes at the next `begin`."""
        for index in np.flatnonzero(ended):
            counters = self.counters[index]
            counters.last_episode_return = float(sum(self.rewards[index]))
            counters.last_episode_discounted_return = mean_discounted_return(
                self.rewards[index], self.gamma)
        self.over |= ended

    def cut(self) -> None:
        """Drops the episodes under way (their phase ended): `begin` resets every env."""
        self.obs = None

    def add_starts(self, replay: Replay, frames: np.ndarray, starting: np.ndarray) -> Replay:
        """`replay` with the first frames [N, H, W, 3] of the episodes `starting` [N] bool
        (no action, reward or terminal leads to a first frame; other seeds add nothing)."""
        count = len(starting)
        return self.steps.add(replay, frames, np.zeros((count, self.action_dim), np.float32),
                              np.zeros(count, np.float32), np.zeros(count, np.float32),
                              np.ones(count, bool), starting)

    def add_step(self, replay: Replay, actions: np.ndarray, step: EnvSteps) -> Replay:
        """`replay` with every seed's transition of one agent step (actions [N, A])."""
        count = len(actions)
        return self.steps.add(replay, step.obs, actions, step.rewards.astype(np.float32),
                              step.terminated.astype(np.float32), np.zeros(count, bool),
                              np.ones(count, bool))

    def close(self) -> None:
        for env in self.envs:
            env.close()


def mean_discounted_return(rewards: list[float], gamma: float) -> float:
    """The discounted return-to-go G_t = Σ_k γ^k r_t+k of each step of an episode, averaged
    over its steps (rewards [T] -> float; 0 for an empty episode)."""
    to_go, total = 0.0, 0.0
    for reward in reversed(rewards):
        to_go = reward + gamma * to_go
        total += to_go
    return total / len(rewards) if rewards else 0.0
