"""Scaling out: N vmapped seeds equal N separate agents; the sharded update equals the plain one.

XLA fixes the number of CPU devices when JAX starts, so the 4-device check runs this module as
a script in a child process (`XLA_FLAGS=--xla_force_host_platform_device_count=4`); parent and
child exchange the initial state and the results as .npz files, so each program compiles once.
"""

import functools
import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slacjax import networks, parallel, replay as replay_lib, update
from slacjax.config import AgentConfig
from tests.helpers import ACTION_DIM, xla_flags
from tests.test_update import filled_replay

CFG = AgentConfig(batch_sac=4, batch_latent=2)  # a sampled batch of 4: one sequence per device
SEEDS = 2
DEVICES = 4
REPO = pathlib.Path(__file__).resolve().parents[1]


def save_tree(path, tree) -> None:
    np.savez(path, *[np.asarray(leaf) for leaf in jax.tree.leaves(tree)])


def load_tree(path, like):
    """The pytree saved at `path`, shaped like `like` (arrays or ShapeDtypeStructs)."""
    with np.load(path) as data:
        leaves = [data[f"arr_{i}"] for i in range(len(data.files))]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)


def weights(state):
    return state.params, state.target_critic, state.log_alpha


def assert_updates_close(got: update.TrainState, expected: update.TrainState) -> None:
    """The same update with sums in another order (sharded, or convolutions computed otherwise)."""
    # Adam's moments hold the gradients themselves: they must match closely.
    chex.assert_trees_all_close(got.opt_state, expected.opt_state, rtol=1e-4, atol=1e-5)
    # Adam's first step moves a weight by about ±lr whatever its gradient's size, so a gradient
    # that is zero up to summation order may flip sign: weights may differ by up to 2·lr.
    max_lr = max(CFG.lr_latent, CFG.lr_actor, CFG.lr_critic, CFG.lr_alpha)
    chex.assert_trees_all_close(weights(got), weights(expected), rtol=1e-4, atol=2.5 * max_lr)
    chex.assert_trees_all_equal((got.step, got.key), (expected.step, expected.key))


def abstract_state():
    return jax.eval_shape(lambda key: update.init_state(CFG, ACTION_DIM, key),
                          jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def seeds():
    """(stacked initial states, stacked replays) of SEEDS agents."""
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    replays = parallel.stack_seeds([filled_replay(10 * seed) for seed in range(SEEDS)])
    return parallel.init_states(CFG, ACTION_DIM, keys), replays


@pytest.fixture(scope="module")
def separate(seeds):
    """Each seed trained on its own by the core's `train_steps`: [(state, metrics)]."""
    states, replays = seeds
    return [update.train_steps(parallel.take_seed(states, i), parallel.take_seed(replays, i),
                               CFG, 1) for i in range(SEEDS)]


def test_init_states_are_independent_agents(seeds):
    states, _ = seeds
    assert states.step.shape == (SEEDS,)
    first, second = (jax.tree.leaves(parallel.take_seed(states.params.actor, i))
                     for i in range(SEEDS))
    assert any(not np.allclose(a, b) for a, b in zip(first, second))


def test_vmapped_seeds_equal_separate_updates(seeds, separate):
    states, replays = seeds
    states = jax.tree.map(jnp.copy, states)  # the fixture's arrays outlive the donation
    got, metrics = parallel.train_steps_seeds(states, replays, CFG, 1)
    assert metrics["latent_loss"].shape == (SEEDS,)
    for i, (state, seed_metrics) in enumerate(separate):
        chex.assert_trees_all_close(parallel.take_seed(got, i), state, rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(parallel.take_seed(metrics, i), seed_metrics, rtol=1e-4,
                                    atol=1e-4)


# (kernel, stride, padding) of every convolution the encoder and the phase-split decoder run.
CONV_LAYERS = [(5, 2, ((2, 2), (2, 2))), (3, 2, ((1, 1), (1, 1))), (4, 1, ((0, 0), (0, 0))),
               (2, 1, ((0, 1), (0, 1))), (3, 1, ((1, 1), (1, 1)))]


def conv_layers_loss(conv, x, kernels):
    """Every layer of CONV_LAYERS on x [B, 8, 8, 3], summed through a nonlinearity."""
    return sum(jnp.sum(jnp.sin(conv(x, kernel, (stride, stride), padding)))
               for kernel, (_, stride, padding) in zip(kernels, CONV_LAYERS))


@pytest.mark.parametrize("strategy", networks.SEED_CONVS)
def test_seed_convs_equal_lax_conv_per_seed_with_gradients(strategy):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(SEEDS, 2, 8, 8, 3)), jnp.float32)
    kernels = [jnp.asarray(rng.normal(size=(SEEDS, k, k, 3, 4)), jnp.float32)
               for k, _, _ in CONV_LAYERS]
    grad = jax.value_and_grad(lambda x, kernels: conv_layers_loss(networks.conv2d, x, kernels),
                              argnums=(0, 1))

    def seeds(x, kernels):
        with networks.seed_conv_strategy(strategy):
            return jax.vmap(grad)(x, kernels)

    program = jax.jit(seeds).lower(x, kernels)
    got = program.compile()(x, kernels)
    expected = [jax.value_and_grad(functools.partial(conv_layers_loss, networks.lax_conv),
                                   argnums=(0, 1))(x[i], [k[i] for k in kernels])
                for i in range(SEEDS)]
    chex.assert_trees_all_close(got, parallel.stack_seeds(expected), rtol=1e-4, atol=1e-4)
    hlo = program.as_text()
    groups = re.findall(r"(?:feature|batch)_group_count = (\d+)", hlo)
    if strategy == "loop":  # plain convolutions, one per seed, forward and both gradients
        assert groups and set(groups) == {"1"} and hlo.count("convolution(") == 3 * SEEDS * 5
    if strategy == "patches":
        assert "convolution(" not in hlo


def test_seed_conv_strategy_is_scoped_and_single_seed_uses_lax():
    frames = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    params = jax.eval_shape(networks.Encoder().init, jax.random.PRNGKey(0), frames)
    with networks.seed_conv_strategy("loop"):
        assert "custom_vjp" in str(jax.make_jaxpr(networks.Encoder().apply)(params, frames))
    jaxpr = str(jax.make_jaxpr(networks.Encoder().apply)(params, frames))
    assert "conv_general_dilated" in jaxpr and "custom_v" not in jaxpr  # custom_vjp / _vmap
    with pytest.raises(ValueError, match="seed_conv"):
        with networks.seed_conv_strategy("depthwise"):
            pass


@pytest.fixture(scope="module")
def separate_pretrain(seeds):
    """Each seed's latent-only update on its own: [(state, metrics)]."""
    states, replays = seeds
    return [update.pretrain_steps(parallel.take_seed(states, i), parallel.take_seed(replays, i),
                                  CFG, 1) for i in range(SEEDS)]


# The fused test above runs the default strategy, and "grouped" is vmap's own rule (the conv
# test covers it); the rest run the latent update, where every convolution's gradient is, at
# one compile (~40 s on a CPU) each.
@pytest.mark.parametrize("strategy", [name for name in networks.SEED_CONVS
                                      if name not in (parallel.DEFAULT_SEED_CONV, "grouped")])
def test_vmapped_seeds_pretrain_equals_separate_with_each_seed_conv(seeds, separate_pretrain,
                                                                     strategy):
    states, replays = seeds
    states = jax.tree.map(jnp.copy, states)
    got, metrics = parallel.pretrain_steps_seeds(states, replays, CFG, 1, seed_conv=strategy)
    for i, (state, seed_metrics) in enumerate(separate_pretrain):
        assert_updates_close(parallel.take_seed(got, i), state)
        chex.assert_trees_all_close(parallel.take_seed(metrics, i), seed_metrics, rtol=1e-4,
                                    atol=1e-4)


def test_add_seeds_writes_each_ring():
    replays = parallel.init_replays(SEEDS, 16, ACTION_DIM)
    frames = np.stack([np.full((64, 64, 3), seed, np.uint8) for seed in range(SEEDS)])
    replays = parallel.add_seeds(replays, frames, np.zeros((SEEDS, ACTION_DIM), np.float32),
                                 np.zeros(SEEDS), np.zeros(SEEDS), np.ones(SEEDS, bool))
    np.testing.assert_array_equal(replays.size, [1] * SEEDS)
    np.testing.assert_array_equal(replays.frames[:, 0, 0, 0, 0], np.arange(SEEDS))


def test_mesh_rejects_batches_that_do_not_split():
    mesh = parallel.make_mesh(1)
    assert mesh.size == 1 and mesh.axis_names == ("data",)
    parallel.check_divisible(CFG, mesh)
    with pytest.raises(ValueError, match="devices"):
        parallel.make_mesh(len(jax.local_devices()) + 1)


@pytest.mark.slow(90)
def test_sharded_update_equals_unsharded(seeds, separate, tmp_path):
    states, replays = seeds
    save_tree(tmp_path / "state.npz", parallel.take_seed(states, 0))
    save_tree(tmp_path / "replay.npz", parallel.take_seed(replays, 0))
    env = dict(os.environ,
               XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={DEVICES}"),
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-m", "tests.test_parallel", str(tmp_path)], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    state, metrics = separate[0]
    got = load_tree(tmp_path / "sharded_state.npz", state)
    chex.assert_trees_all_close(load_tree(tmp_path / "sharded_metrics.npz", metrics), metrics,
                                rtol=1e-4, atol=1e-4)
    assert_updates_close(got, state)


def run_sharded(folder: pathlib.Path) -> None:
    """Child process, DEVICES CPU devices: one sharded train step on the saved state/replay."""
    assert len(jax.devices()) == DEVICES, jax.devices()
    mesh = parallel.make_mesh("all")
    state = parallel.replicate(load_tree(folder / "state.npz", abstract_state()), mesh)
    replay_like = jax.eval_shape(lambda: replay_lib.init(48, ACTION_DIM))
    replay = parallel.replicate(load_tree(folder / "replay.npz", replay_like), mesh)

    compiled = parallel.train_steps_sharded.lower(state, replay, CFG, 1, mesh=mesh).compile()
    assert "all-reduce" in compiled.as_text()  # gradients summed across the devices
    state, metrics = compiled(state, replay)
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == DEVICES

    sharded = parallel.shard_batch(np.arange(2 * DEVICES).reshape(DEVICES, 2), mesh)
    assert {shard.data.shape for shard in sharded.addressable_shards} == {(1, 2)}
    save_tree(folder / "sharded_state.npz", state)
    save_tree(folder / "sharded_metrics.npz", metrics)


if __name__ == "__main__":
    run_sharded(pathlib.Path(sys.argv[1]))
