"""The step factory's small programs: adding to N replays, metric sums, reconstruction, and
what it refuses. (Training, acting and seeds: test_update, test_policy, test_parallel.)"""

import chex
import jax
import numpy as np
import pytest

from slacjax import parallel
from slacjax.steps import make_steps
from tests.helpers import ACTION_DIM, SMALL
from tests.test_update import STEPS, filled_replay, one_seed

SEEDS = 2


def test_add_writes_each_active_ring_in_place_and_leaves_the_others():
    steps = make_steps(SMALL, ACTION_DIM, SEEDS)
    replays = steps.init_replay(16)
    chex.assert_shape(replays.frames, (SEEDS, 16, 64, 64, 3))
    frames = np.stack([np.full((64, 64, 3), seed + 1, np.uint8) for seed in range(SEEDS)])
    zeros = np.zeros(SEEDS, np.float32)
    actions = np.ones((SEEDS, ACTION_DIM), np.float32)
    replays = steps.add(replays, frames, actions, zeros, zeros, np.ones(SEEDS, bool),
                        np.ones(SEEDS, bool))
    before = jax.tree.map(np.array, replays)  # copies: a view would keep the buffer alive
    leaf = replays.frames
    replays = steps.add(replays, frames + 10, actions, zeros + 1, zeros, np.zeros(SEEDS, bool),
                        np.array([False, True]))
    assert leaf.is_deleted()
    np.testing.assert_array_equal(replays.size, [1, 2])
    chex.assert_trees_all_equal(parallel.take_seed(replays, 0), parallel.take_seed(before, 0))
    np.testing.assert_array_equal(replays.frames[1, :2, 0, 0, 0], [2, 12])
    np.testing.assert_array_equal(replays.rewards[1, :2], [1, 0])


def test_accumulate_adds_weighted_metrics_and_donates_the_total():
    total = {"loss": np.zeros(SEEDS, np.float32)}
    total = STEPS.accumulate(total, {"loss": np.ones(SEEDS, np.float32)}, np.float32(3))
    leaf = total["loss"]
    total = STEPS.accumulate(total, {"loss": np.full(SEEDS, 2, np.float32)}, np.float32(0.5))
    assert leaf.is_deleted()
    np.testing.assert_allclose(total["loss"], [4.0, 4.0])


def test_reconstruct_gives_truth_posterior_and_prior_per_seed():
    state = STEPS.init_state(jax.random.PRNGKey(0)[None])
    replay = one_seed(filled_replay(0))
    truth, posterior, prior = STEPS.reconstruct(state.params.latent, replay,
                                                jax.random.PRNGKey(1)[None])
    frames = (1, SMALL.sequence_length + 1, 64, 64, 3)
    chex.assert_shape([truth, posterior, prior], frames)
    assert truth.dtype == np.uint8
    for images in (posterior, prior):
        assert 0 <= float(images.min()) and float(images.max()) <= 1
    # The truth is a window of the replay's frames.
    assert any(np.array_equal(truth[0], replay.frames[0, start:start + 9])
               for start in range(48 - 9))


def test_the_factory_refuses_a_seed_count_below_one():
    with pytest.raises(ValueError, match="num_seeds must be positive"):
        make_steps(SMALL, ACTION_DIM, 0)


def test_the_factory_refuses_an_unknown_formulation_and_names_the_chosen_one():
    with pytest.raises(ValueError, match="formulation must be one of phases, phase_grads, gemm"):
        make_steps(SMALL, ACTION_DIM, formulation="winograd")
    chosen = make_steps(SMALL, ACTION_DIM, formulation="gemm")
    assert chosen.conv_formulation(1) == chosen.conv_formulation(4) == "gemm"
    assert make_steps(SMALL, ACTION_DIM).conv_formulation(1) == "phase_grads"  # this CPU's
