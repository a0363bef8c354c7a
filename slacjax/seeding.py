"""A run's random streams, all derived from seeds, so a resumed run replays them exactly.

Stream ids: 0 training episode resets (seed, 0, episode), 1 random actions (seed, 1, agent
step), 2 evaluation episodes (seed, 2, evaluation, greedy, episode), 3 `experiments.evaluate`
episodes (seed, 3, greedy, episode), 4 `slacjax.random_policy` baseline episodes (seed, 4,
episode; their actions are stream 1's). JAX keys: (init, act, eval, picture) from the seed.
"""

from __future__ import annotations

import numpy as np


def stream_seed(*parts: int) -> int:
    """A 32-bit seed for one stream (e.g. (seed, stream, episode)): independent across parts."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def random_action(seed: int, agent_step: int, action_dim: int) -> np.ndarray:
    """The collection phase's uniform action of `agent_step`: reproducible after a resume."""
    rng = np.random.default_rng([seed, 1, agent_step])
    return rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)


def run_keys(seeds: list[int]) -> tuple:
    """Each seed's root keys, stacked [N, 2]: (init, act, eval, picture)."""
    import jax  # here only: the streams above serve processes without JAX (the port's driver)

    per_seed = [jax.random.split(jax.random.PRNGKey(seed), 4) for seed in seeds]
    return tuple(jax.numpy.stack(keys) for keys in zip(*per_seed))
