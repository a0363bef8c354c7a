"""Acting: the 8-frame / 7-action window of the episode and the policy (docs/algorithm.md §4)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from slacjax import latent, sac
from slacjax.networks import Networks


@struct.dataclass
class History:
    """The acting window: frames uint8 [T, 64, 64, 3] (x_t-T+1..x_t), actions [T−1, A]."""

    frames: jax.Array
    actions: jax.Array


def history_reset(first_frame: jax.Array, action_dim: int, sequence_length: int) -> History:
    """Episode start: the first frame repeated, zero actions (docs/algorithm.md §4)."""
    frames = jnp.repeat(jnp.asarray(first_frame)[None], sequence_length, axis=0)
    return History(frames=frames, actions=jnp.zeros((sequence_length - 1, action_dim)))


def history_push(history: History, action: jax.Array, frame: jax.Array) -> History:
    """Slides the window: `action` was taken at the newest frame and led to `frame`."""
    frames = jnp.concatenate([history.frames[1:], jnp.asarray(frame)[None]], axis=0)
    actions = jnp.concatenate([history.actions[1:], jnp.asarray(action, jnp.float32)[None]], 0)
    return History(frames=frames, actions=actions)


def act(params, history: History, key: jax.Array, greedy: jax.Array, nets: Networks) -> jax.Array:
    """The action for one window -> [A].

    `params` is `TrainState.params`. `greedy` (a traced bool) picks tanh(mean) over a sample,
    so switching between exploration and evaluation never recompiles.
    """
    action_dim = nets.actor.action_dim
    steps = history.frames.shape[0]
    chex.assert_shape(history.actions, (steps - 1, action_dim))
    features = latent.encode(params.latent, history.frames, nets)
    inputs = jnp.concatenate([features.reshape(-1), history.actions.reshape(-1)])[None]
    sampled, _ = sac.sample_action(params.actor, inputs, key, nets)
    mean_action = sac.greedy_action(params.actor, inputs, nets)
    return jnp.where(greedy, mean_action, sampled)[0]
