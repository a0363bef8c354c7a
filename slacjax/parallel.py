"""Scaling out: many independent seeds in one program, and one agent over many devices.

Seeds. N agents are N `TrainState`s stacked along a leading axis, with N replays stacked the
same way; `train_steps_seeds` is `jax.vmap` of the very step `update.train_steps` runs, in one
jitted, state-donating dispatch. Seeds share nothing but the program: their keys, batches and
metrics ([N] each) stay apart, and `take_seed` / `stack_seeds` move between one seed and N.
Each seed has its own convolution weights, which vmap would turn into slow grouped
convolutions; `seed_conv` (static) picks how they are computed instead (`networks.SEED_CONVS`):
"loop" (the default: one ordinary convolution per seed), "patches" (im2col + a batched matmul)
or "grouped" (vmap's own rule). All give the same numbers as N separate agents.

Devices. One agent, data parallel: a 1-D `Mesh` named "data", the state and the replay
replicated on every device, and each sampled batch constrained to be split along its batch
axis. XLA's partitioner then runs each device's share of the batch and inserts the gradient
all-reduce, so the same update runs on 1 or N devices and gives the same numbers (up to the
order of floating-point sums). Sampled batch sizes must divide by the number of devices.

Multi-host (one process per host, every process runs the same program):

    # on each of P hosts, before any other JAX call:
    jax.distributed.initialize(coordinator_address="10.0.0.1:1234",  # process 0's host:port
                               num_processes=P, process_id=p)        # p = 0 .. P-1
    # or, under SLURM (`srun --ntasks-per-node=1 python -m ...`), Open MPI (`mpirun`) or a
    # Kubernetes indexed job, with the values found in the environment:
    jax.distributed.initialize()
    # JAX_COORDINATOR_ADDRESS=host:port may replace the coordinator_address argument, and
    # JAX_COORDINATOR_PORT overrides the port that auto-detection picks.

After that `jax.devices()` lists every host's devices and `make_mesh("all")` spans them all.
`train_steps_sharded` needs one replay replicated on every device, which a single process has;
across hosts each keeps its own environments and replay, samples its share of the batch
(`replay.sample` of `sampled_batch_size / P` sequences, key folded with `jax.process_index()`),
joins the shares with `global_batch` and calls `update_sharded`. Parameters start equal on all
hosts (same seed) and the all-reduced gradients keep them equal.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from slacjax import networks
from slacjax import replay as replay_lib
from slacjax import update
from slacjax.config import DEFAULT_SEED_CONV, AgentConfig

DATA_AXIS = "data"

# ---------------------------------------------------------------------------------------------
# Seeds: N agents stacked on a leading axis


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_states(cfg: AgentConfig, action_dim: int, keys: jax.Array) -> update.TrainState:
    """N fresh agents from keys [N, 2] -> a TrainState whose every leaf has a leading [N]."""
    return jax.vmap(functools.partial(update.init_state, cfg, action_dim))(keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def init_replays(num_seeds: int, capacity: int, action_dim: int,
                 image_size: int = 64) -> replay_lib.Replay:
    """N empty replays stacked: frames uint8 [N, C, H, W, 3] and so on."""
    return jax.vmap(lambda _: replay_lib.init(capacity, action_dim, image_size))(
        jnp.arange(num_seeds))


# Arguments as `replay.add`'s, each with a leading [N]: frames [N, H, W, 3], actions [N, A],
# rewards / terminals / firsts [N]. Donated, so every seed's ring is written in place.
add_seeds = jax.jit(jax.vmap(replay_lib.add), donate_argnums=0)


def _add_if(replay: replay_lib.Replay, frame, action, reward, terminal, first, active):
    # `replay.add` where `active`, else the replay unchanged. `add` writes two slots, the
    # cursor's and the one before: it runs on a two-slot copy of them, and only those two
    # rows go back, so the ring is updated in place (choosing between two whole rings would
    # copy them).
    capacity, cursor = replay.capacity, replay.cursor
    slots = jnp.stack([(cursor - 1) % capacity, cursor])
    rows = jax.tree.map(lambda leaf: leaf[slots] if leaf.ndim else leaf, replay)
    added = replay_lib.add(rows.replace(cursor=jnp.ones_like(cursor)), frame, action, reward,
                           terminal, first)
    chosen = jax.tree.map(lambda new, old: jnp.where(active, new, old), added, rows)
    return replay.replace(
        **{name: getattr(replay, name).at[slots].set(getattr(chosen, name))
           for name in ("frames", "actions", "rewards", "terminals", "episode", "episode_step")},
        cursor=jnp.where(active, (cursor + 1) % capacity, cursor),
        size=jnp.where(active, jnp.minimum(replay.size + 1, capacity), replay.size),
        next_episode=chosen.next_episode)


# `add_seeds` for some seeds only: `active` bool [N] (e.g. the seeds whose episode starts).
add_seeds_where = jax.jit(jax.vmap(_add_if), donate_argnums=0)


def _vmapped_steps(states, replays, cfg: AgentConfig, num_steps: int, latent_only: bool,
                   seed_conv: str):
    # The core's step unjitted: the strategy is read while tracing, and a nested jit could
    # reuse a trace made under another one. One program, each seed its own batch.
    step = functools.partial(update.sample_and_update_steps, cfg=cfg, num_steps=num_steps,
                             latent_only=latent_only)
    with networks.seed_conv_strategy(seed_conv):
        return jax.vmap(step)(states, replays)


_seeds_hot_path = functools.partial(jax.jit, static_argnames=("cfg", "num_steps", "seed_conv"),
                                    donate_argnums=0)


@_seeds_hot_path
def train_steps_seeds(states: update.TrainState, replays: replay_lib.Replay, cfg: AgentConfig,
                      num_steps: int = 1, seed_conv: str = DEFAULT_SEED_CONV):
    """`update.train_steps` for N seeds at once -> (states, metrics {name: [N]}). Donated."""
    return _vmapped_steps(states, replays, cfg, num_steps, False, seed_conv)


@_seeds_hot_path
def pretrain_steps_seeds(states: update.TrainState, replays: replay_lib.Replay,
                         cfg: AgentConfig, num_steps: int = 1,
                         seed_conv: str = DEFAULT_SEED_CONV):
    """`update.pretrain_steps` for N seeds at once -> (states, metrics {name: [N]}). Donated."""
    return _vmapped_steps(states, replays, cfg, num_steps, True, seed_conv)


def take_seed(tree, index: int):
    """Seed `index`'s slice of a stacked pytree (a state, a replay, metrics)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def stack_seeds(trees: Sequence):
    """The inverse of `take_seed`: same-shaped pytrees -> one with a leading [len(trees)]."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


# ---------------------------------------------------------------------------------------------
# Devices: one agent, its batch split over a mesh


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


def shard_batch(batch, mesh: Mesh):
    """`batch` (any pytree of [B, ...] arrays) placed with B split evenly over the mesh."""
    return jax.device_put(batch, batch_sharded(mesh))


def global_batch(local_batch, mesh: Mesh):
    """Multi-host: every process's [B / P, ...] share -> one global [B, ...] batch, sharded."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)),
        local_batch)


def check_divisible(cfg: AgentConfig, mesh: Mesh, latent_only: bool = False) -> None:
    """Raises unless each sampled batch splits evenly over the mesh's devices."""
    size = cfg.batch_latent if latent_only else update.sampled_batch_size(cfg)
    if size % mesh.size:
        raise ValueError(f"a batch of {size} sequences does not split over {mesh.size} devices")


def _update_on_mesh(state, batch, key, cfg: AgentConfig, mesh: Mesh, latent_only: bool):
    batch = jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))
    step = update.latent_update if latent_only else update.update
    state, metrics = step(state, batch, key, cfg)
    # Pinned replicated, so a donated state keeps one layout from call to call.
    return jax.lax.with_sharding_constraint((state, metrics), replicated(mesh))


@functools.partial(jax.jit, static_argnames=("cfg", "mesh"), donate_argnums=0)
def update_sharded(state: update.TrainState, batch, key: jax.Array, cfg: AgentConfig,
                   mesh: Mesh):
    """`update.update` with `batch` split over the mesh -> (state, metrics), both replicated.

    state replicated (`replicate`); batch of `update.sampled_batch_size(cfg)` sequences,
    placed anywhere (`shard_batch` or `global_batch` saves a reshuffle). Donated.
    """
    return _update_on_mesh(state, batch, key, cfg, mesh, latent_only=False)


def _sharded_steps(state, replay, cfg: AgentConfig, num_steps: int, mesh: Mesh,
                   latent_only: bool):
    # The core's sample-then-update steps with each sampled batch split over the mesh; the
    # replicated replay lets each device gather its part.
    check_divisible(cfg, mesh, latent_only)
    on_mesh = functools.partial(_update_on_mesh, cfg=cfg, mesh=mesh, latent_only=latent_only)
    return update.sample_and_update_steps(state, replay, cfg, num_steps, latent_only,
                                          apply_update=on_mesh)


_sharded_hot_path = functools.partial(jax.jit, static_argnames=("cfg", "num_steps", "mesh"),
                                      donate_argnums=0)


@_sharded_hot_path
def train_steps_sharded(state: update.TrainState, replay: replay_lib.Replay, cfg: AgentConfig,
                        num_steps: int = 1, *, mesh: Mesh):
    """`update.train_steps` on a mesh: state and replay replicated, each batch split. Donated."""
    return _sharded_steps(state, replay, cfg, num_steps, mesh, latent_only=False)


@_sharded_hot_path
def pretrain_steps_sharded(state: update.TrainState, replay: replay_lib.Replay,
                           cfg: AgentConfig, num_steps: int = 1, *, mesh: Mesh):
    """`update.pretrain_steps` on a mesh: latent batches split over the devices. Donated."""
    return _sharded_steps(state, replay, cfg, num_steps, mesh, latent_only=True)
