"""The trainer's reports on its agents: evaluations beside the paper's return, reconstructions."""

from __future__ import annotations

import time

import jax
import numpy as np

from slacjax import evaluation, logger, reference
from slacjax.config import ExperimentConfig
from slacjax.run_state import Counters
from slacjax.seed_files import RunFiles
from slacjax.steps import Steps

POLICIES = (("stochastic", False), ("greedy", True))  # (name, greedy), in evaluation order


class NonFinitePolicy(Exception):
    """A policy in evaluation gave an action that is not finite: which `policy`, whose
    `agents` (seeds' places)."""

    def __init__(self, policy: str, agents: list[int]):
        super().__init__(f"non-finite action of the {policy} policy of agent(s) {agents}")
        self.policy, self.agents = policy, agents


class Reports:
    """Evaluations and reconstructions of the seeds' agents, into each seed's files, with a
    log line through `progress`. Evaluations run all seeds' episodes side by side in one
    env, made at the first."""

    def __init__(self, cfg: ExperimentConfig, steps: Steps, seeds: list[int],
                 eval_keys: jax.Array, picture_keys: jax.Array, progress: logger.Progress):
        self.cfg, self.steps, self.seeds, self.progress = cfg, steps, seeds, progress
        self.eval_keys, self.picture_keys = eval_keys, picture_keys  # [N, 2] each
        self.eval_env = None

    def evaluate(self, files: RunFiles, params, counters: Counters,
                 stopwatch: logger.Stopwatch) -> None:
        """Evaluation number `counters.evals` of `params` ([N, ...]): `eval_episodes` of each
        seed's stochastic and greedy policy; rows, curves, then the log line beside the
        paper's return. NonFinitePolicy if an action is not finite."""
        started = time.monotonic()
        episodes = self.cfg.eval_episodes
        self.progress.doing(f"evaluating ({episodes} episode{'s' * (episodes != 1)} per policy)")
        rows = eval_rows(counters, {policy: self.returns(params, counters.evals, policy, greedy)
                                    for policy, greedy in POLICIES})
        paper = reference.mean_at(self.cfg.task, counters.env_steps)
        files.write_evaluation(rows, started, stopwatch, paper)
        self.progress.write(eval_line(counters.env_steps, rows, paper))
        self.progress.eval_done(mean_return(rows, "stochastic"))
        self.progress.doing(None)

    def returns(self, params, evaluation_number: int, policy: str,
                greedy: bool) -> np.ndarray:
        """Evaluation `evaluation_number` of every seed's `policy` -> returns [N, episodes]."""
        if self.eval_env is None:
            self.eval_env = evaluation.make_eval_env(self.cfg, evaluation.side_by_side(
                len(self.seeds) * self.cfg.eval_episodes, self.cfg.eval_envs))
        try:
            return evaluation.evaluate_seeds(
                self.eval_env, self.steps, params, self.seeds, self.eval_keys,
                evaluation_number, self.cfg.eval_episodes, greedy)
        except evaluation.NonFiniteAction as error:
            raise NonFinitePolicy(policy, error.agents) from error

    def write_reconstructions(self, files: RunFiles, latent_params, replay,
                              counters: Counters) -> None:
        """Per seed, ground truth, posterior reconstruction and prior imagination of one
        replay sequence (PNG and GIF in its media dir), named by phase and env step."""
        c = counters
        self.progress.doing("drawing the reconstructions")
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(
            self.picture_keys, c.env_steps + c.pretrain_updates)
        truth, posterior, prior = (np.asarray(images) for images in self.steps.reconstruct(
            latent_params, replay, keys))
        files.write_reconstructions(
            truth, posterior, prior, f"reconstruction_{c.phase}_{c.env_steps:09d}",
            title=f"{self.cfg.task} at env step {c.env_steps}: truth / posterior / prior "
                  "from frame 0")
        self.progress.doing(None)

    def close(self) -> None:
        if self.eval_env is not None:
            self.eval_env.close()


def eval_rows(counters: Counters, returns: dict[str, np.ndarray]) -> list[dict]:
    """Each seed's evaluation row from returns {policy: [N, episodes]}: per policy the mean,
    the std and every episode's return."""
    rows = []
    for seed_returns in zip(*returns.values()):  # one seed's [episodes] of every policy
        row = dict(phase="eval", env_step=counters.env_steps, agent_step=counters.agent_steps)
        for policy, episodes in zip(returns, seed_returns):
            row[f"return_{policy}"] = float(np.mean(episodes))
            row[f"return_{policy}_std"] = float(np.std(episodes))
            row[f"returns_{policy}"] = [float(value) for value in episodes]
        rows.append(row)
    return rows


def mean_return(rows: list[dict], policy: str) -> float:
    """The seeds' mean returns of `policy`, averaged over the seeds."""
    return float(np.mean([row[f"return_{policy}"] for row in rows]))


def eval_line(env_step: int, rows: list[dict], paper: float | None) -> str:
    """Both policies' returns over the seeds, beside the SLAC paper's at that env step."""
    beside = "" if paper is None else f"; SLAC paper {paper:.0f}"
    return (f"eval at env step {env_step}: return {mean_return(rows, 'stochastic'):.1f} "
            f"stochastic, {mean_return(rows, 'greedy'):.1f} greedy{beside}")
