"""The on-device replay: a ring of single frames sampled as windows (docs/algorithm.md §1, §5).

Each slot holds one frame plus the transition taken from it, so a sequence of L+1 frames is a
window of L+1 consecutive slots: frames are stored once, never per sequence. The buffer is a
pytree and `add` / `sample` are pure jnp functions, so the jitted train step samples its own
batch on the device, and everything also works under `jax.vmap` (one replay per seed).

Shapes: C = capacity, H = W = image size, A = action dim, B = batch size, L = sequence length.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

from slacjax.batch import Batch


@struct.dataclass
class Replay:
    """A ring buffer of C frames and the transitions between them.

    frames:       uint8   [C, H, W, 3]  one observation per slot
    actions:      float32 [C, A]        action taken at frames[i] (zero at an episode's last frame)
    rewards:      float32 [C]           reward received for actions[i]
    terminals:    float32 [C]           1 if actions[i] ended the episode by a true termination
    episode:      int32   [C]           id of the episode slot i belongs to, -1 = never written
    episode_step: int32   [C]           index of frames[i] within its episode
    cursor:       int32   []            next slot to write
    size:         int32   []            number of slots written, ≤ C
    next_episode: int32   []            id the next episode will get
    """

    frames: jax.Array
    actions: jax.Array
    rewards: jax.Array
    terminals: jax.Array
    episode: jax.Array
    episode_step: jax.Array
    cursor: jax.Array
    size: jax.Array
    next_episode: jax.Array

    # Negative axes so the properties also hold for replays stacked along a leading (seed) axis.
    @property
    def capacity(self) -> int:
        return self.frames.shape[-4]

    @property
    def image_size(self) -> int:
        return self.frames.shape[-3]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[-1]


def init(capacity: int, action_dim: int, image_size: int = 64) -> Replay:
    """An empty replay of `capacity` slots for `image_size`² RGB frames and `action_dim` actions."""
    return Replay(
        frames=jnp.zeros((capacity, image_size, image_size, 3), jnp.uint8),
        actions=jnp.zeros((capacity, action_dim), jnp.float32),
        rewards=jnp.zeros((capacity,), jnp.float32),
        terminals=jnp.zeros((capacity,), jnp.float32),
        episode=jnp.full((capacity,), -1, jnp.int32),
        episode_step=jnp.zeros((capacity,), jnp.int32),
        cursor=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
        next_episode=jnp.zeros((), jnp.int32),
    )


def _write_row(array: jax.Array, index: jax.Array, row: jax.Array) -> jax.Array:
    """array with array[index] = row; a dynamic-update-slice, done in place when donated."""
    return jax.lax.dynamic_update_index_in_dim(array, row.astype(array.dtype), index, axis=0)


def add(replay: Replay, frame: jax.Array, action: jax.Array, reward: jax.Array,
        terminal: jax.Array, first: jax.Array) -> Replay:
    """Append one observation; pure and jittable (jit it with donate_argnums=0 to update in place).

    frame uint8 [H, W, 3]; action float32 [A]; reward, terminal, first scalars.
    first=True: `frame` starts a new episode (the observation after reset); action, reward and
      terminal are ignored. The first call on a fresh replay must have first=True.
    first=False: (action, reward, terminal) is the transition from the previous slot's frame into
      `frame`; it is written into slot cursor-1, then `frame` into slot cursor.
    """
    chex.assert_shape(frame, replay.frames.shape[1:])
    chex.assert_type(frame, jnp.uint8)
    chex.assert_shape(action, (replay.action_dim,))
    chex.assert_shape([reward, terminal, first], ())
    first = jnp.asarray(first, jnp.bool_)
    cursor = replay.cursor
    previous = (cursor - 1) % replay.capacity

    # Branch-free (a select, not a cond) so it stays cheap under vmap: on first=True the
    # previous slot's transition is rewritten with its own values.
    action_row = jnp.where(first, replay.actions[previous], action)
    reward_value = jnp.where(first, replay.rewards[previous], reward)
    terminal_value = jnp.where(first, replay.terminals[previous], terminal)
    episode = jnp.where(first, replay.next_episode, replay.next_episode - 1)
    step = jnp.where(first, 0, replay.episode_step[previous] + 1)

    actions = _write_row(replay.actions, previous, action_row)
    rewards = _write_row(replay.rewards, previous, reward_value)
    terminals = _write_row(replay.terminals, previous, terminal_value)
    # The new slot's own transition is not known yet; clear what the overwritten frame left there.
    actions = _write_row(actions, cursor, jnp.zeros_like(action_row))
    rewards = _write_row(rewards, cursor, jnp.zeros_like(reward_value))
    terminals = _write_row(terminals, cursor, jnp.zeros_like(terminal_value))

    return Replay(
        frames=_write_row(replay.frames, cursor, frame),
        actions=actions,
        rewards=rewards,
        terminals=terminals,
        episode=_write_row(replay.episode, cursor, episode),
        episode_step=_write_row(replay.episode_step, cursor, step),
        cursor=(cursor + 1) % replay.capacity,
        size=jnp.minimum(replay.size + 1, replay.capacity),
        next_episode=replay.next_episode + first.astype(jnp.int32),
    )


def add_if(replay: Replay, frame: jax.Array, action: jax.Array, reward: jax.Array,
           terminal: jax.Array, first: jax.Array, active: jax.Array) -> Replay:
    """`add` where `active` (a bool scalar), else the replay unchanged; vmap it over seeds.

    `add` writes two slots, the cursor's and the one before: it runs on a two-slot copy of them
    and only those rows go back, so a donated ring is updated in place (choosing between two
    whole rings would copy them).
    """
    capacity, cursor = replay.capacity, replay.cursor
    slots = jnp.stack([(cursor - 1) % capacity, cursor])
    rows = jax.tree.map(lambda leaf: leaf[slots] if leaf.ndim else leaf, replay)
    added = add(rows.replace(cursor=jnp.ones_like(cursor)), frame, action, reward, terminal,
                first)
    chosen = jax.tree.map(lambda new, old: jnp.where(active, new, old), added, rows)
    return replay.replace(
        **{name: getattr(replay, name).at[slots].set(getattr(chosen, name))
           for name in ("frames", "actions", "rewards", "terminals", "episode", "episode_step")},
        cursor=jnp.where(active, (cursor + 1) % capacity, cursor),
        size=jnp.where(active, jnp.minimum(replay.size + 1, capacity), replay.size),
        next_episode=chosen.next_episode)


def _check_sequence_length(replay: Replay, sequence_length: int) -> None:
    # The endpoint argument in `valid_starts` needs a window strictly shorter than the ring.
    if not 1 <= sequence_length < replay.capacity:
        raise ValueError(f"sequence_length {sequence_length} must be in [1, capacity = "
                         f"{replay.capacity})")


def valid_starts(replay: Replay, sequence_length: int = 8) -> jax.Array:
    """bool [C]: slot s starts a window of L+1 consecutive frames of one episode, none overwritten.

    Writes go to consecutive slots in ring order, each (episode, step) pair is written exactly
    once, and ids never repeat. So if slot s still holds (e, t) and slot s+L (mod C) holds
    (e, t+L), those frames were written L slots apart, and no slot between them can have been
    overwritten since: the cursor would have had to pass slot s first (L < C). Checking the two
    endpoints therefore covers ring wrap, partial episodes and the cursor (the newest slot and the
    oldest one it is about to overwrite never pair up: different ids, or steps C apart).
    """
    _check_sequence_length(replay, sequence_length)
    end_episode = jnp.roll(replay.episode, -sequence_length)
    end_step = jnp.roll(replay.episode_step, -sequence_length)
    valid = ((replay.episode >= 0)
             & (end_episode == replay.episode)
             & (end_step == replay.episode_step + sequence_length))
    chex.assert_shape(valid, (replay.capacity,))
    return valid


def num_valid(replay: Replay, sequence_length: int = 8) -> jax.Array:
    """int32 []: the number of valid window starts."""
    return jnp.sum(valid_starts(replay, sequence_length), dtype=jnp.int32)


def sample(replay: Replay, key: jax.Array, batch_size: int, sequence_length: int = 8) -> Batch:
    """B windows drawn uniformly, with replacement, over all valid starts (batch_size,
    sequence_length static).

    Returns frames uint8 [B, L+1, H, W, 3], actions [B, L, A], rewards [B, L], terminals [B, L].
    If no valid start exists the contents are undefined (but it does not fail under jit).
    """
    capacity = replay.capacity
    valid = valid_starts(replay, sequence_length)
    # Inverse-CDF over the mask in integers: exact uniformity, O(C + B log C) instead of the
    # O(B·C) of a categorical over C logits.
    valid_before = jnp.cumsum(valid, dtype=jnp.int32)
    rank = jax.random.randint(key, (batch_size,), 0, valid_before[-1])
    starts = jnp.searchsorted(valid_before, rank, side="right")
    starts = jnp.minimum(starts, capacity - 1)  # only when nothing is valid
    slots = (starts[:, None] + jnp.arange(sequence_length + 1)) % capacity  # [B, L+1]
    transition_slots = slots[:, :-1]  # the action of a window's last frame is not part of it

    batch = Batch(
        frames=replay.frames[slots],
        actions=replay.actions[transition_slots],
        rewards=replay.rewards[transition_slots],
        terminals=replay.terminals[transition_slots],
    )
    image_shape = replay.frames.shape[1:]
    chex.assert_shape(batch.frames, (batch_size, sequence_length + 1, *image_shape))
    chex.assert_shape(batch.actions, (batch_size, sequence_length, replay.action_dim))
    chex.assert_shape([batch.rewards, batch.terminals], (batch_size, sequence_length))
    return batch
