"""Seeds stacked on a leading axis, and one agent's batch split over a device mesh.

Seeds: N agents are N `TrainState`s (and N replays) stacked along axis 0; `take_seed` /
`stack_seeds` move between one seed and N. Devices: a 1-D mesh on axis "data", the state and
the replay replicated, each sampled batch split along its batch axis; XLA's partitioner inserts
the gradient all-reduce. `slacjax.steps` builds the jitted programs of both.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from slacjax import update
from slacjax.batch import Batch
from slacjax.config import AgentConfig
from slacjax.networks import Networks

DATA_AXIS = "data"


def local_device_sharding() -> jax.sharding.SingleDeviceSharding:
    """Where one-device arrays live: the first local device. Fresh states and replays
    (`steps`) and restored checkpoints must agree, or a fresh state beside a restored replay
    compiles each program twice."""
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

def take_seed(tree, index: int):
    """Seed `index`'s slice of a stacked pytree (a state, a replay, metrics)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def stack_seeds(trees: Sequence):
    """The inverse of `take_seed`: same-shaped pytrees -> one with a leading [len(trees)]."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def make_mesh(devices: str | int = "all") -> Mesh:
    """A 1-D mesh on axis "data": "all" = every device of every process, n = the first n local."""
    if devices == "all":
        chosen = jax.devices()
    else:
        local = jax.local_devices()
        if not 1 <= int(devices) <= len(local):
            raise ValueError(f"devices must be 'all' or 1..{len(local)}, got {devices!r}")
        chosen = local[:int(devices)]
    return Mesh(np.asarray(chosen), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over "data", the rest whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """A copy of `tree` (state, replay) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def check_divisible(cfg: AgentConfig, mesh: Mesh, latent_only: bool = False) -> None:
    """Raises unless each sampled batch splits evenly over the mesh's devices."""
    size = cfg.batch_latent if latent_only else update.sampled_batch_size(cfg)
    if size % mesh.size:
        raise ValueError(f"a batch of {size} sequences does not split over {mesh.size} devices")


def gradients_on_mesh(state: update.TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig,
                      nets: Networks, mesh: Mesh, latent_only: bool):
    """`update.gradients` (or `latent_gradients`) with `batch` split over the mesh ->
    (Gradients, metrics), both replicated. For use inside a jitted function."""
    batch = jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))
    compute = update.latent_gradients if latent_only else update.gradients
    return jax.lax.with_sharding_constraint(compute(state, batch, key, cfg, nets),
                                            replicated(mesh))
