"""Running policies in environments: the run's envs, episodes alone or side by side, returns.

Every episode has its own reset seed and action key, and names the agent (seed) that plays
it, so a return does not depend on how many episodes ran side by side or which shared a batch
(up to the float rounding of a batched network call). Side by side means a vector env of
worker processes stepped in lockstep with one batched `steps.act` per step.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from slacjax.config import ExperimentConfig
from slacjax.run_dir import LaunchError
from slacjax.seeding import stream_seed
from slacjax.steps import Steps


class NonFiniteAction(Exception):
    """The policy gave an action that is not finite; `agents` are the agents that did."""

    def __init__(self, agents: list[int]):
        super().__init__(f"non-finite action from agent(s) {agents}")
        self.agents = agents


def checked(actions, agents) -> np.ndarray:
    """`actions` [M, A] of `agents` [M] on the host; NonFiniteAction (naming the agents)
    before any of them reaches a simulator."""
    actions = np.asarray(actions)
    finite = np.isfinite(actions).all(axis=-1)
    if not finite.all():
        raise NonFiniteAction(sorted({int(agent) for agent in np.asarray(agents)[~finite]}))
    return actions


def ensure_gl() -> None:
    """Fixes MUJOCO_GL before any simulator is imported; no GL -> LaunchError."""
    from slacjax.envs import ensure_gl_backend

    try:
        ensure_gl_backend()
    except RuntimeError as error:
        raise LaunchError(str(error)) from error


def env_settings(cfg: ExperimentConfig) -> dict:
    """`envs.make`'s arguments for the run: action repeat, render quality, episode cap."""
    cap = (None if cfg.episode_env_steps is None
           else math.ceil(cfg.episode_env_steps / cfg.repeat))
    return dict(action_repeat=cfg.repeat, render_quality=cfg.render_quality,
                max_episode_steps=cap)


def make_env(cfg: ExperimentConfig, seed: int):
    """The task's pixel env with the run's settings, seeded with `seed`."""
    from slacjax import envs  # after ensure_gl(): it imports the simulators

    return envs.make(cfg.task, seed=seed, **env_settings(cfg))


def side_by_side(episodes: int, envs: int | None) -> int:
    """How many of `episodes` run side by side: `envs`, or what the cores allow (cores − 2);
    at least 1, at most `episodes`."""
    wanted = (os.cpu_count() or 1) - 2 if envs is None else envs
    return max(1, min(wanted, episodes))


def make_eval_env(cfg: ExperimentConfig, count: int):
    """`count` evaluation envs: for 1, one in this process (episodes one after another), else
    a vector env of `count` worker processes."""
    if count == 1:
        return make_env(cfg, cfg.seed)
    from slacjax import envs

    return envs.make_vector(cfg.task, count, seed=cfg.seed, **env_settings(cfg))


def episode_keys(root_key: jax.Array, streams) -> jax.Array:
    """One action key per episode: fold_in(root_key, stream) for each stream -> [M, 2]."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        root_key, np.asarray(streams, np.uint32))


def run_episode(env, steps: Steps, params, agent: int, key: jax.Array, greedy: bool,
                reset_seed: int, record: bool = False) -> tuple[float, list[np.ndarray]]:
    """One episode of agent `agent` of `params` (stacked [N, ...]) in `env`, in this process
    -> (return, its frames if `record`)."""
    obs, _ = env.reset(seed=reset_seed)
    history = steps.reset_history(None, obs[None], np.ones(1, bool))
    agents, keys = np.array([agent], np.int32), key[None]
    frames = [obs] if record else []
    total, step, done = 0.0, 0, False
    while not done:
        action = checked(steps.act(params, agents, history, keys, np.int32(step), greedy),
                         agents)
        obs, reward, terminated, truncated, _ = env.step(action[0])
        history = steps.push_history(history, action, obs[None])
        if record:
            frames.append(obs)
        total += float(reward)
        step += 1
        done = terminated or truncated
    return total, frames


def run_episodes(vector_env, steps: Steps, params, agents, keys: jax.Array, greedy: bool,
                 reset_seeds) -> np.ndarray:
    """One episode in each env of a vector env, in lockstep -> returns [M].

    agents [M] (which agent of `params` plays env m), keys [M, 2] and reset_seeds (M ints)
    are the episodes' own. An env whose episode ended keeps being stepped (the vector env
    resets it) until every episode has ended; what it does then is not counted.
    """
    count = vector_env.num_envs
    if not len(reset_seeds) == len(agents) == keys.shape[0] == count:
        raise ValueError(f"{count} envs need {count} agents, keys and reset seeds, got "
                         f"{len(agents)}, {keys.shape[0]} and {len(reset_seeds)}")
    obs, _ = vector_env.reset(seed=[int(seed) for seed in reset_seeds])
    history = steps.reset_history(None, obs, np.ones(count, bool))
    agents = np.asarray(agents, np.int32)
    totals = np.zeros(count)
    running = np.ones(count, bool)
    step = 0
    while running.any():
        actions = checked(steps.act(params, agents, history, keys, np.int32(step), greedy),
                          agents)
        obs, rewards, terminated, truncated, _ = vector_env.step(actions)
        totals += np.where(running, rewards, 0.0)
        running &= ~(terminated | truncated)
        history = steps.push_history(history, actions, obs)
        step += 1
    return totals


def run_episode_batches(env, steps: Steps, params, agents, keys: jax.Array, greedy: bool,
                        reset_seeds) -> np.ndarray:
    """M episodes, episode m played by agent agents[m] with keys[m] and reset_seeds[m] ->
    returns [M]. A single env runs them one after another in this process; a vector env of W
    envs runs them W at a time, a last partial batch padded with repeats of the last
    episode, whose returns are dropped."""
    import gymnasium  # already loaded: `env` exists

    count = len(reset_seeds)
    agents, reset_seeds = np.asarray(agents), np.asarray(reset_seeds)
    if not isinstance(env, gymnasium.vector.VectorEnv):
        return np.array([run_episode(env, steps, params, int(agents[m]), keys[m], greedy,
                                     int(reset_seeds[m]))[0] for m in range(count)])
    width = env.num_envs
    padded = np.minimum(np.arange(-(-count // width) * width), count - 1)
    returns = [run_episodes(env, steps, params, agents[batch], keys[batch], greedy,
                            reset_seeds[batch]) for batch in padded.reshape(-1, width)]
    return np.concatenate(returns)[:count] if returns else np.zeros(0)


def evaluate_seeds(env, steps: Steps, params, seeds: list[int], eval_keys: jax.Array,
                   evaluation: int, episodes: int, greedy: bool) -> np.ndarray:
    """Evaluation number `evaluation` of every seed: `episodes` episodes each, all side by
    side in `env` -> returns [N, episodes].

    Episode e of seed s has the reset seed and key of stream (s, 2, evaluation, greedy, e),
    eval_keys [N, 2] being the seeds' evaluation root keys.
    """
    streams = [[stream_seed(seed, 2, evaluation, int(greedy), episode)
                for episode in range(episodes)] for seed in seeds]
    keys = jax.numpy.concatenate([episode_keys(eval_keys[index], seed_streams)
                                  for index, seed_streams in enumerate(streams)])
    agents = np.repeat(np.arange(len(seeds)), episodes)
    returns = run_episode_batches(env, steps, params, agents, keys, greedy,
                                  np.concatenate(streams))
    return returns.reshape(len(seeds), episodes)
