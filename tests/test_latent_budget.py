"""The latent-budget benchmark's object pixels and probe sequences on a hand-made replay."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import latent_budget
from slacjax import replay as replay_lib

SIZE = 8  # frame side: tiny frames, no networks involved


def replay_with_a_moving_dot(steps: int = 40, rewarded_at: int = 20):
    """One episode over a grey background with one bright pixel moving along the top row;
    a reward only on the transition into `rewarded_at`."""
    replay = replay_lib.init(64, action_dim=1, image_size=SIZE)
    for step in range(steps):
        frame = np.full((SIZE, SIZE, 3), 100, np.uint8)
        frame[0, step % SIZE] = 255
        replay = replay_lib.add(replay, jnp.asarray(frame), jnp.zeros(1), jnp.float32(
            step == rewarded_at), jnp.float32(0), jnp.bool_(step == 0))
    return replay


def test_object_mask_marks_only_the_pixels_away_from_the_median_frame():
    replay = replay_with_a_moving_dot()
    frames = np.asarray(replay.frames)[:3][None]  # [1, 3, H, W, 3]
    mask = latent_budget.object_mask(replay, frames)
    assert mask.shape == (1, 3, SIZE, SIZE)
    expected = np.zeros((3, SIZE, SIZE), bool)
    expected[np.arange(3), 0, np.arange(3)] = True
    np.testing.assert_array_equal(mask[0], expected)


def test_probe_puts_the_rewarded_sequences_first():
    replay = replay_with_a_moving_dot()
    batch = latent_budget.probe_batch(replay, 8, jax.random.PRNGKey(0))
    rewarded = np.asarray(batch.rewards).max(1) > 0
    assert len(rewarded) == latent_budget.PROBE_SEQUENCES
    half = latent_budget.PROBE_SEQUENCES // 2
    assert rewarded[:half].all() and not rewarded[half:].any()
