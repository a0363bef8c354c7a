"""Shared tiny configurations and data for the core tests (2 × 9 frames, as CPU JAX allows)."""

import os

import jax
import numpy as np

from slacjax import networks
from slacjax.batch import Batch
from slacjax.config import AgentConfig

ACTION_DIM = 3
TINY = AgentConfig(batch_sac=2, batch_latent=2)
NETS = networks.build(TINY, ACTION_DIM)
# The step factory's tests: every network size away from its default (a config validation
# accepts must train), and SAC and latent batches of 4 that split over 4 devices.
SMALL = AgentConfig(batch_sac=4, batch_latent=4, hidden_dim=32, z1_dim=8, z2_dim=16,
                    feature_dim=24)


def smooth_batch(seed: int, batch_size: int = 2, steps: int = 8, action_dim: int = ACTION_DIM):
    """Learnable frames (moving colour gradients) with actions and rewards: a Batch."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, 64)
    phase = rng.uniform(0, 2 * np.pi, size=(batch_size, 1, 1, 1, 1))
    t = np.arange(steps + 1)[None, :, None, None, None]
    colour = np.array([1.0, 0.5, 0.25])[None, None, None, None, :]
    frames = 0.5 + 0.5 * np.sin(phase + 0.3 * t + 4 * grid[None, None, :, None, None] * colour
                                + 2 * grid[None, None, None, :, None])
    actions = rng.uniform(-1, 1, size=(batch_size, steps, action_dim)).astype(np.float32)
    return Batch(frames=(frames * 255).astype(np.uint8), actions=actions,
                 rewards=actions.mean(-1), terminals=np.zeros((batch_size, steps), np.float32))


def to_device(batch: Batch) -> Batch:
    return jax.tree.map(jax.numpy.asarray, batch)


def xla_flags(*flags: str) -> str:
    """This process's XLA_FLAGS with `flags` added (for a child process's environment)."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()
