"""Acting: the 8-frame / 7-action window of the current episode and the jitted policy (spec §4)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from flax import struct

from slacjax import latent, sac
from slacjax.config import AgentConfig


@struct.dataclass
class History:
    """The acting window: frames uint8 [T, 64, 64, 3] (x_t-T+1..x_t), actions [T−1, A]."""

    frames: jax.Array
    actions: jax.Array


def history_reset(first_frame: jax.Array, action_dim: int, sequence_length: int = 8) -> History:
    """Episode start: the first frame repeated, zero actions (spec §4)."""
    frames = jnp.repeat(jnp.asarray(first_frame)[None], sequence_length, axis=0)
    return History(frames=frames, actions=jnp.zeros((sequence_length - 1, action_dim)))


def history_push(history: History, action: jax.Array, frame: jax.Array) -> History:
    """Slides the window: `action` was taken at the newest frame and led to `frame`."""
    frames = jnp.concatenate([history.frames[1:], jnp.asarray(frame)[None]], axis=0)
    actions = jnp.concatenate([history.actions[1:], jnp.asarray(action, jnp.float32)[None]], 0)
    return History(frames=frames, actions=actions)


@functools.partial(jax.jit, static_argnames=("cfg",))
def act(params, frames_history: jax.Array, actions_history: jax.Array, key: jax.Array,
        greedy: jax.Array, cfg: AgentConfig) -> jax.Array:
    """The action for one window: frames uint8 [T, 64, 64, 3], actions [T−1, A] -> [A].

    `params` is `TrainState.params`. `greedy` (a traced bool) picks tanh(mean) over a sample,
    so switching between exploration and evaluation never recompiles.
    """
    steps, action_dim = cfg.sequence_length, actions_history.shape[-1]
    chex.assert_shape(frames_history, (steps, cfg.image_size, cfg.image_size, 3))
    chex.assert_shape(actions_history, (steps - 1, action_dim))
    features = latent.encode(params.latent, frames_history, cfg)
    inputs = jnp.concatenate([features.reshape(-1), actions_history.reshape(-1)])[None]
    sampled, _ = sac.sample_action(params.actor, inputs, key, action_dim)
    mean_action = sac.greedy_action(params.actor, inputs, action_dim)
    return jnp.where(greedy, mean_action, sampled)[0]
