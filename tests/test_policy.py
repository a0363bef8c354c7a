"""Acting: the episode-start padding, the sliding window and the jitted policy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from slacjax import policy, update
from tests.helpers import ACTION_DIM, TINY


def frame(value: int) -> np.ndarray:
    return np.full((64, 64, 3), value, np.uint8)


def test_history_pads_with_the_first_frame_and_zero_actions_then_slides():
    history = policy.history_reset(frame(7), ACTION_DIM)
    chex.assert_shape(history.frames, (8, 64, 64, 3))
    chex.assert_shape(history.actions, (7, ACTION_DIM))
    assert np.all(np.asarray(history.frames) == 7) and np.all(np.asarray(history.actions) == 0)
    for t in range(1, 10):
        history = policy.history_push(history, np.full(ACTION_DIM, t, np.float32), frame(7 + t))
    # After 9 pushes: frames x_2..x_9 (values 9..16), actions a_2..a_8 (values 3..9).
    np.testing.assert_array_equal(np.asarray(history.frames)[:, 0, 0, 0], np.arange(9, 17))
    np.testing.assert_array_equal(np.asarray(history.actions)[:, 0], np.arange(3, 10))
    assert history.frames.dtype == jnp.uint8


def test_act_is_bounded_greedy_is_deterministic_and_switching_does_not_recompile():
    state = jax.jit(update.init_state, static_argnums=(0, 1))(TINY, ACTION_DIM,
                                                              jax.random.PRNGKey(0))
    history = policy.history_reset(frame(100), ACTION_DIM)
    act = policy.act
    args = (state.params, history.frames, history.actions)
    greedy_a = act(*args, jax.random.PRNGKey(1), True, TINY)
    greedy_b = act(*args, jax.random.PRNGKey(2), True, TINY)
    sampled_a = act(*args, jax.random.PRNGKey(1), False, TINY)
    sampled_b = act(*args, jax.random.PRNGKey(2), False, TINY)
    chex.assert_shape(greedy_a, (ACTION_DIM,))
    np.testing.assert_array_equal(greedy_a, greedy_b)
    assert not np.allclose(sampled_a, sampled_b)
    for a in (greedy_a, sampled_a, sampled_b):
        assert np.all(np.abs(np.asarray(a)) <= 1.0)
    assert act._cache_size() == 1
