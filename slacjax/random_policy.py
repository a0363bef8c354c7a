"""The uniform random policy's returns on a task: the floor a learning run must clear.

Episodes run unrendered (`envs.make(pixels=False)`: the same dynamics, action repeat and
episode ends, at the physics' speed). One evaluation reports the mean over `window` episodes,
so the no-learning distribution of that statistic is what a threshold is read from:
`window_mean_quantile` bootstraps it from the measured episodes.
"""

from __future__ import annotations

import numpy as np

from slacjax import envs, seeding

STREAM = 4  # seeding's stream id of random-policy baseline episodes (seed, 4, episode)


def random_policy_returns(task: str, episodes: int, seed: int = 0) -> np.ndarray:
    """[episodes] returns of uniform actions in [-1, 1]^A, one per agent step (held for the
    task's action repeat), each episode reset with stream (seed, 4, episode)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = envs.make(task, seed=seed, pixels=False)
    action_dim = env.action_space.shape[0]
    returns, agent_step = [], 0
    try:
        for episode in range(episodes):
            env.reset(seed=seeding.stream_seed(seed, STREAM, episode))
            total, over = 0.0, False
            while not over:
                action = seeding.random_action(seed, agent_step, action_dim)
                _, reward, terminated, truncated, _ = env.step(action)
                total, over, agent_step = total + reward, terminated or truncated, agent_step + 1
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns)


def window_mean_quantile(returns: np.ndarray, window: int, quantile: float,
                         resamples: int = 20_000, seed: int = 0) -> float:
    """The `quantile` of the mean of `window` episodes drawn (with replacement) from
    `returns`: where one evaluation of a policy no better than these episodes falls."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    rng = np.random.default_rng(seed)
    means = rng.choice(np.asarray(returns, float), (resamples, window)).mean(axis=1)
    return float(np.quantile(means, quantile))
