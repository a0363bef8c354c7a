"""Acting: the episode-start padding, the sliding window and the factory's batched policy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from slacjax import parallel, policy
from slacjax.steps import make_steps
from tests.helpers import ACTION_DIM, SMALL
from tests.test_update import STEPS

WINDOWS = 2


def frame(value: int) -> np.ndarray:
    return np.full((64, 64, 3), value, np.uint8)


def test_history_pads_with_the_first_frame_and_zero_actions_then_slides():
    history = policy.history_reset(frame(7), ACTION_DIM, 8)
    chex.assert_shape(history.frames, (8, 64, 64, 3))
    chex.assert_shape(history.actions, (7, ACTION_DIM))
    assert np.all(np.asarray(history.frames) == 7) and np.all(np.asarray(history.actions) == 0)
    for t in range(1, 10):
        history = policy.history_push(history, np.full(ACTION_DIM, t, np.float32), frame(7 + t))
    # After 9 pushes: frames x_2..x_9 (values 9..16), actions a_2..a_8 (values 3..9).
    np.testing.assert_array_equal(np.asarray(history.frames)[:, 0, 0, 0], np.arange(9, 17))
    np.testing.assert_array_equal(np.asarray(history.actions)[:, 0], np.arange(3, 10))
    assert history.frames.dtype == jnp.uint8


def test_batched_histories_restart_only_the_starting_windows():
    firsts = np.stack([frame(1), frame(2)])
    history = STEPS.reset_history(None, firsts, np.ones(WINDOWS, bool))
    history = STEPS.push_history(history, np.ones((WINDOWS, ACTION_DIM), np.float32),
                                 np.stack([frame(5), frame(6)]))
    chex.assert_shape(history.frames, (WINDOWS, SMALL.sequence_length, 64, 64, 3))
    restarted = STEPS.reset_history(history, np.stack([frame(9), frame(9)]),
                                    np.array([False, True]))
    chex.assert_trees_all_equal(parallel.take_seed(restarted, 0), parallel.take_seed(history, 0))
    chex.assert_trees_all_equal(parallel.take_seed(restarted, 1),
                                policy.history_reset(frame(9), ACTION_DIM, 8))


def test_act_is_bounded_greedy_is_deterministic_and_switching_does_not_recompile():
    state = STEPS.init_state(jax.random.PRNGKey(0)[None])
    history = STEPS.reset_history(None, np.stack([frame(100)] * WINDOWS), np.ones(WINDOWS, bool))
    agents = np.zeros(WINDOWS, np.int32)

    def act(seed, greedy, step=0):
        keys = jax.random.split(jax.random.PRNGKey(seed), WINDOWS)
        return STEPS.act(state.params, agents, history, keys, np.int32(step), greedy)

    greedy_a, greedy_b = act(1, True), act(2, True)
    sampled_a, sampled_b, later = act(1, False), act(2, False), act(1, False, step=1)
    chex.assert_shape(greedy_a, (WINDOWS, ACTION_DIM))
    np.testing.assert_array_equal(greedy_a, greedy_b)
    assert not np.allclose(sampled_a, sampled_b) and not np.allclose(sampled_a, later)
    assert not np.allclose(sampled_a[0], sampled_a[1])  # each window its own key
    for a in (greedy_a, sampled_a, sampled_b):
        assert np.all(np.abs(np.asarray(a)) <= 1.0)
    assert STEPS.act._cache_size() == 1


def test_each_window_acts_with_its_own_agent():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    two = make_steps(SMALL, ACTION_DIM, 2)
    states = two.init_state(keys)
    history = two.reset_history(None, np.stack([frame(30), frame(200), frame(30)]),
                                np.ones(3, bool))
    window_keys = jax.random.split(jax.random.PRNGKey(5), 3)
    got = two.act(states.params, np.array([1, 0, 0], np.int32), history, window_keys,
                  np.int32(3), False)
    for window, agent in enumerate([1, 0, 0]):
        params, one = (jax.tree.map(lambda leaf, i=i: leaf[i:i + 1], tree)
                       for i, tree in ((agent, states.params), (window, history)))
        alone = STEPS.act(params, np.zeros(1, np.int32), one, window_keys[window:window + 1],
                          np.int32(3), False)
        np.testing.assert_allclose(got[window], alone[0], rtol=1e-4, atol=1e-5)
