"""The training sample: B sequences of 9 frames and the 8 transitions between them.

docs/algorithm.md §1.
"""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class Batch:
    """B sampled sequences, L = sequence_length (8).

    frames:    uint8   [B, L+1, 64, 64, 3]  x_0..x_L
    actions:   float32 [B, L, A]            a_0..a_{L-1}, a_t taken at x_t
    rewards:   float32 [B, L]               r_t received for a_t
    terminals: float32 [B, L]               1 where a_t ended the episode by a true termination
    """

    frames: jax.Array
    actions: jax.Array
    rewards: jax.Array
    terminals: jax.Array

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    def take(self, start: int, stop: int) -> "Batch":
        """Sequences start..stop-1 (static slice)."""
        return jax.tree.map(lambda x: x[start:stop], self)
