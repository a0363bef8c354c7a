"""Tests of the on-device replay: slot writes, window validity, uniform sampling, ring wrap, vmap.

Every added frame carries its global add index g in its pixels (g % 256, g // 256) and the
transition into frame g carries reward g and action (g, episode), so a sampled window can be
traced back to the exact frames, slots and episode it came from.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from slacjax import replay as rp
from slacjax.batch import Batch

IMAGE_SIZE = 4
ACTION_DIM = 2
L = 8


@dataclasses.dataclass
class Stream:
    """A sequence of `add` arguments (arrays with a leading [N] axis) and its ground truth."""

    frames: np.ndarray      # uint8 [N, S, S, 3]
    actions: np.ndarray     # float32 [N, A]
    rewards: np.ndarray     # float32 [N]
    terminals: np.ndarray   # float32 [N]
    firsts: np.ndarray      # bool [N]
    episode: np.ndarray     # int [N] episode of add g
    step: np.ndarray        # int [N] step of add g within its episode

    def args(self):
        return tuple(jnp.asarray(x) for x in
                     (self.frames, self.actions, self.rewards, self.terminals, self.firsts))


def build_stream(lengths: list[int], terminated: list[bool]) -> Stream:
    """Episodes of the given numbers of frames; terminated[i]: episode i's last transition is a
    true termination (else it is cut off, as by a time limit)."""
    num_adds = sum(lengths)
    frames = np.zeros((num_adds, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    actions = np.zeros((num_adds, ACTION_DIM), np.float32)
    rewards = np.zeros(num_adds, np.float32)
    terminals = np.zeros(num_adds, np.float32)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(length) for length in lengths])
    g = np.arange(num_adds)
    frames[..., 0] = (g % 256)[:, None, None]
    frames[..., 1] = (g // 256)[:, None, None]
    frames[..., 2] = (episode % 256)[:, None, None]
    firsts = step == 0
    actions[~firsts] = np.stack([g, episode], axis=1)[~firsts]
    rewards[~firsts] = g[~firsts]
    last_frames = np.cumsum(lengths) - 1
    terminals[last_frames[np.asarray(terminated)]] = 1.0
    return Stream(frames, actions, rewards, terminals, firsts, episode, step)


def make_stream(seed: int, num_adds: int, max_episode_frames: int = 30) -> Stream:
    """num_adds frames of episodes of 2..max_episode_frames frames (the last one cut short); about
    half end by termination. Some are shorter than a window, so they have no valid start."""
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < num_adds:
        lengths.append(int(rng.integers(2, max_episode_frames + 1)))
    lengths[-1] -= sum(lengths) - num_adds
    terminated = list(rng.random(len(lengths)) < 0.5)
    terminated[-1] = False  # the last episode is still running
    return build_stream(lengths, terminated)


def reference_valid_starts(stream: Stream, capacity: int, num_adds: int,
                           sequence_length: int = L) -> np.ndarray:
    """bool [C] by brute force over a Python ring of (episode, step, g) slot contents."""
    ring = [None] * capacity
    for g in range(num_adds):
        ring[g % capacity] = (stream.episode[g], stream.step[g], g)
    valid = np.zeros(capacity, bool)
    for s in range(capacity):
        window = [ring[(s + k) % capacity] for k in range(sequence_length + 1)]
        if any(slot is None for slot in window):
            continue
        episode0, step0, _ = window[0]
        valid[s] = all(e == episode0 and t == step0 + k for k, (e, t, _) in enumerate(window))
    return valid


@jax.jit
def fill(replay: rp.Replay, frames, actions, rewards, terminals, firsts) -> rp.Replay:
    """`add` every element of a stream, in order, inside one scan."""
    def add_one(buffer, inputs):
        return rp.add(buffer, *inputs), None
    return jax.lax.scan(add_one, replay, (frames, actions, rewards, terminals, firsts))[0]


sample = jax.jit(rp.sample, static_argnames=("batch_size", "sequence_length"))


def filled(capacity: int, num_adds: int, seed: int) -> tuple[rp.Replay, Stream]:
    stream = make_stream(seed, num_adds)
    return fill(rp.init(capacity, ACTION_DIM, IMAGE_SIZE), *stream.args()), stream


def frame_ids(batch: Batch) -> np.ndarray:
    """int [B, L+1]: the global add index g of every sampled frame, decoded from its pixels."""
    frames = np.asarray(batch.frames).astype(np.int64)
    return frames[:, :, 0, 0, 0] + 256 * frames[:, :, 0, 0, 1]


def check_windows(batch: Batch, stream: Stream, num_adds: int, capacity: int) -> np.ndarray:
    """Asserts every window is L+1 consecutive, still-stored frames of one episode with their own
    transitions; returns the start slot of each window, int [B]."""
    ids = frame_ids(batch)
    np.testing.assert_array_equal(ids, ids[:, :1] + np.arange(L + 1))
    assert ids.min() >= max(0, num_adds - capacity), "a window holds an overwritten frame"
    assert ids.max() < num_adds
    episodes = stream.episode[ids]
    assert np.all(episodes == episodes[:, :1]), "a window crosses an episode boundary"
    np.testing.assert_array_equal(np.asarray(batch.frames)[:, :, 0, 0, 2], episodes % 256)
    np.testing.assert_array_equal(np.asarray(batch.rewards), ids[:, 1:])
    np.testing.assert_array_equal(np.asarray(batch.actions[..., 0]), ids[:, 1:])
    np.testing.assert_array_equal(np.asarray(batch.actions[..., 1]), episodes[:, 1:])
    np.testing.assert_array_equal(np.asarray(batch.terminals), stream.terminals[ids[:, 1:]])
    return ids[:, 0] % capacity


def test_init_and_sample_shapes():
    replay = rp.init(64, ACTION_DIM, image_size=8)
    chex.assert_shape(replay.frames, (64, 8, 8, 3))
    chex.assert_type(replay.frames, jnp.uint8)
    chex.assert_shape(replay.actions, (64, ACTION_DIM))
    chex.assert_shape([replay.rewards, replay.terminals, replay.episode, replay.episode_step],
                      (64,))
    chex.assert_type([replay.actions, replay.rewards, replay.terminals], jnp.float32)
    chex.assert_type([replay.episode, replay.episode_step, replay.cursor, replay.size,
                      replay.next_episode], jnp.int32)
    chex.assert_shape([replay.cursor, replay.size, replay.next_episode], ())
    assert (replay.capacity, replay.image_size, replay.action_dim) == (64, 8, ACTION_DIM)
    assert np.all(np.asarray(replay.episode) == -1)
    assert int(rp.num_valid(replay)) == 0

    frames = jnp.zeros((40, 8, 8, 3), jnp.uint8)
    firsts = jnp.arange(40) % 20 == 0
    replay = fill(replay, frames, jnp.ones((40, ACTION_DIM)), jnp.ones(40), jnp.zeros(40), firsts)
    assert int(rp.num_valid(replay)) == 2 * (20 - L)
    batch = sample(replay, jax.random.key(0), batch_size=5, sequence_length=L)
    assert isinstance(batch, Batch)
    chex.assert_shape(batch.frames, (5, L + 1, 8, 8, 3))
    chex.assert_type(batch.frames, jnp.uint8)
    chex.assert_shape(batch.actions, (5, L, ACTION_DIM))
    chex.assert_shape([batch.rewards, batch.terminals], (5, L))
    chex.assert_type([batch.actions, batch.rewards, batch.terminals], jnp.float32)


def test_add_under_jit_with_donation_writes_the_right_slots():
    add = jax.jit(rp.add, donate_argnums=0)
    replay = rp.init(8, ACTION_DIM, IMAGE_SIZE)
    stream = build_stream([3, 1], [True, False])

    def add_from_stream(buffer, g):
        # A first frame's action, reward and terminal must be ignored: pass junk there.
        junk = 9.0 if stream.firsts[g] else 0.0
        return add(buffer, jnp.asarray(stream.frames[g]), jnp.asarray(stream.actions[g] + junk),
                   jnp.float32(stream.rewards[g] + junk), jnp.float32(stream.terminals[g] + junk),
                   jnp.bool_(stream.firsts[g]))

    replay = add_from_stream(replay, 0)
    previous = replay
    replay = add_from_stream(replay, 1)
    assert previous.frames.is_deleted(), "the frame store was copied, not updated in place"
    replay = add_from_stream(replay, 2)
    replay = add_from_stream(replay, 3)  # a new episode: slot 2's transition stays empty

    np.testing.assert_array_equal(replay.frames[:4], stream.frames[:4])
    np.testing.assert_array_equal(replay.actions[:4], [[1, 0], [2, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(replay.rewards[:4], [1, 2, 0, 0])
    np.testing.assert_array_equal(replay.terminals[:4], [0, 1, 0, 0])
    np.testing.assert_array_equal(replay.episode, [0, 0, 0, 1, -1, -1, -1, -1])
    np.testing.assert_array_equal(replay.episode_step[:4], [0, 1, 2, 0])
    assert (int(replay.cursor), int(replay.size), int(replay.next_episode)) == (4, 4, 2)


@pytest.mark.parametrize("capacity, num_adds", [(300, 250), (200, 500)])
def test_sampled_windows_are_valid_and_uniform(capacity, num_adds):
    replay, stream = filled(capacity, num_adds, seed=capacity)
    expected_valid = reference_valid_starts(stream, capacity, num_adds)
    np.testing.assert_array_equal(rp.valid_starts(replay, L), expected_valid)
    assert int(rp.num_valid(replay, L)) == expected_valid.sum() > 20

    batch = sample(replay, jax.random.key(1), batch_size=10_000, sequence_length=L)
    starts = check_windows(batch, stream, num_adds, capacity)
    counts = np.bincount(starts, minlength=capacity)
    assert counts[~expected_valid].sum() == 0
    assert stats.chisquare(counts[expected_valid]).pvalue > 1e-3


def test_wraparound_keeps_only_live_data_and_samples_wrapping_windows():
    capacity, num_adds = 128, 320  # 2.5 × capacity
    replay, stream = filled(capacity, num_adds, seed=7)
    assert (int(replay.size), int(replay.cursor)) == (capacity, num_adds % capacity)
    np.testing.assert_array_equal(rp.valid_starts(replay, L),
                                  reference_valid_starts(stream, capacity, num_adds))
    batch = sample(replay, jax.random.key(2), batch_size=10_000, sequence_length=L)
    starts = check_windows(batch, stream, num_adds, capacity)
    assert np.any(starts > capacity - 1 - L), "no window wrapping around slot C-1 → 0 was sampled"


@pytest.mark.parametrize("capacity, lengths, expected_starts", [
    # The new episode's slots 0..3 have steps 0..3 and the old one's slots 8..11 steps 8..11: the
    # steps alone line up across episodes, the episode ids must not. Old windows 8..15 wrap into
    # the new episode.
    (16, [16, 4], [4, 5, 6, 7]),
    # The same with the new episode's newest slot 8 right before the cursor: slots 1..8 are one
    # episode, slot 9 is the old one's step 9.
    (16, [16, 9], [0]),
    # One episode of 2.5 × C frames: every slot has the same id, the steps must rule out windows
    # across the cursor (slot 16); windows from 24..31 wrap around C-1 → 0.
    (32, [80], list(range(16, 32)) + list(range(0, 8))),
])
def test_hand_made_rings(capacity, lengths, expected_starts):
    stream = build_stream(lengths, [False] * len(lengths))
    replay = fill(rp.init(capacity, ACTION_DIM, IMAGE_SIZE), *stream.args())
    expected_valid = np.isin(np.arange(capacity), expected_starts)
    np.testing.assert_array_equal(reference_valid_starts(stream, capacity, sum(lengths)),
                                  expected_valid)
    np.testing.assert_array_equal(rp.valid_starts(replay, L), expected_valid)
    batch = sample(replay, jax.random.key(6), batch_size=1000, sequence_length=L)
    starts = check_windows(batch, stream, sum(lengths), capacity)
    assert set(starts) == set(expected_starts)


def test_a_terminal_is_only_ever_the_last_transition_of_a_window():
    capacity, num_adds = 200, 400
    replay, stream = filled(capacity, num_adds, seed=3)
    batch = sample(replay, jax.random.key(3), batch_size=10_000, sequence_length=L)
    ids = frame_ids(batch)
    terminals = np.asarray(batch.terminals)
    assert terminals[:, :-1].sum() == 0
    ends_by_termination = stream.terminals[ids[:, -1]] == 1
    assert ends_by_termination.any()
    np.testing.assert_array_equal(terminals[:, -1], ends_by_termination)


def test_memory_is_the_frames_and_transitions_with_little_overhead():
    capacity, action_dim = 100_000, 6
    shapes = jax.eval_shape(lambda: rp.init(capacity, action_dim, image_size=64))

    def nbytes(leaf):
        return int(np.prod(leaf.shape)) * leaf.dtype.itemsize

    total = sum(nbytes(leaf) for leaf in jax.tree.leaves(shapes))
    transitions = nbytes(shapes.actions) + nbytes(shapes.rewards) + nbytes(shapes.terminals)
    assert nbytes(shapes.frames) == capacity * 64 * 64 * 3
    assert total <= 1.05 * nbytes(shapes.frames) + transitions


def test_vmap_over_independent_replays_matches_separate_calls():
    capacity = 96
    streams = [make_stream(seed, 200) for seed in (11, 12)]
    stacked_args = [jnp.stack(arrays) for arrays in zip(*(s.args() for s in streams))]
    empty = rp.init(capacity, ACTION_DIM, IMAGE_SIZE)
    stacked_empty = jax.tree.map(lambda x: jnp.stack([x, x]), empty)
    keys = jax.random.split(jax.random.key(4), 2)

    replays = jax.vmap(fill)(stacked_empty, *stacked_args)
    batches = jax.vmap(lambda r, k: rp.sample(r, k, 64, L))(replays, keys)
    num_valids = jax.vmap(lambda r: rp.num_valid(r, L))(replays)
    for i, stream in enumerate(streams):
        separate = fill(empty, *stream.args())
        chex.assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], replays), separate)
        chex.assert_trees_all_equal(jax.tree.map(lambda x, i=i: x[i], batches),
                                    sample(separate, keys[i], batch_size=64, sequence_length=L))
        assert int(num_valids[i]) == int(rp.num_valid(separate, L))


def test_sampling_an_empty_replay_does_not_fail_and_long_windows_are_refused():
    replay = rp.init(16, ACTION_DIM, IMAGE_SIZE)
    batch = sample(replay, jax.random.key(5), batch_size=4, sequence_length=L)
    chex.assert_shape(batch.frames, (4, L + 1, IMAGE_SIZE, IMAGE_SIZE, 3))
    with pytest.raises(ValueError):
        rp.valid_starts(replay, sequence_length=16)
