"""Scaling out: N vmapped seeds equal N separate agents whatever the seed-convolution strategy;
the sharded update equals the plain one.

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

from slacjax import networks, parallel
from slacjax.config import DEFAULT_SEED_CONV, SEED_CONVS
from slacjax.steps import make_steps
from tests.helpers import ACTION_DIM, SMALL, xla_flags
from tests.test_update import STEPS, filled_replay

CFG = SMALL  # a sampled batch of 4: one sequence per device
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


def assert_updates_close(got, expected) -> None:
    """The same update with sums in another order (sharded, or convolutions computed otherwise)."""
    # Adam's moments hold the gradients themselves: they must match to a small fraction of each
    # leaf's scale (the decoder's gradients sum large, cancelling terms of every pixel, in
    # another order when split: their errors scale with the terms, not with each element).
    expected_moments = jax.tree_util.tree_leaves_with_path(expected.opt_state)
    for (path, want), have in zip(expected_moments, jax.tree.leaves(got.opt_state)):
        scale = float(np.max(np.abs(want), initial=0.0))
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=max(1e-5, 2e-3 * scale),
                                   err_msg=jax.tree_util.keystr(path))
    # Adam's first step moves a weight by about ±lr whatever its gradient's size, so a gradient
    # that is zero up to summation order may flip sign: weights may differ by up to 2·lr.
    max_lr = max(CFG.lr_latent, CFG.lr_actor, CFG.lr_critic, CFG.lr_alpha)
    chex.assert_trees_all_close(weights(got), weights(expected), rtol=1e-4, atol=2.5 * max_lr)
    chex.assert_trees_all_equal((got.step, got.key), (expected.step, expected.key))


def seed_slice(tree, index: int):
    """Seed `index` of a stacked pytree, keeping a seed axis of 1 (a 1-seed program's input)."""
    return jax.tree.map(lambda leaf: leaf[index:index + 1], tree)


def seeds_steps(seed_conv: str = DEFAULT_SEED_CONV):
    return make_steps(CFG, ACTION_DIM, SEEDS, seed_conv=seed_conv)


@pytest.fixture(scope="module")
def seeds():
    """(stacked initial states, stacked replays) of SEEDS agents."""
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    replays = parallel.stack_seeds([filled_replay(10 * seed) for seed in range(SEEDS)])
    return seeds_steps().init_state(keys), replays


@pytest.fixture(scope="module")
def separate(seeds):
    """Each seed trained on its own by the 1-seed program: [(state, metrics)], seed axis 1."""
    states, replays = seeds
    return [STEPS.train(seed_slice(states, i), seed_slice(replays, i), 1) for i in range(SEEDS)]


def test_init_states_are_independent_agents_each_a_1_seed_init(seeds):
    states, _ = seeds
    assert states.step.shape == (SEEDS,)
    first, second = (jax.tree.leaves(parallel.take_seed(states.params.actor, i))
                     for i in range(SEEDS))
    assert any(not np.allclose(a, b) for a, b in zip(first, second))
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    chex.assert_trees_all_equal(seed_slice(states, 1), STEPS.init_state(keys[1:]))


def test_vmapped_seeds_equal_separate_updates(seeds, separate):
    states, replays = seeds
    states = jax.tree.map(jnp.copy, states)  # the fixture's arrays outlive the donation
    got, metrics = seeds_steps().train(states, replays, 1)
    assert metrics["latent_loss"].shape == (SEEDS,)
    for i, (state, seed_metrics) in enumerate(separate):
        chex.assert_trees_all_close(seed_slice(got, i), state, rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(seed_slice(metrics, i), seed_metrics, rtol=1e-4, atol=1e-4)


# (kernel, stride, padding) of every convolution the encoder and the phase-split decoder run.
CONV_LAYERS = [(5, 2, ((2, 2), (2, 2))), (3, 2, ((1, 1), (1, 1))), (4, 1, ((0, 0), (0, 0))),
               (2, 1, ((0, 1), (0, 1))), (3, 1, ((1, 1), (1, 1)))]


def conv_layers_loss(conv, x, kernels):
    """Every layer of CONV_LAYERS on x [B, 8, 8, 3], summed through a nonlinearity."""
    return sum(jnp.sum(jnp.sin(conv(x, kernel, (stride, stride), padding)))
               for kernel, (_, stride, padding) in zip(kernels, CONV_LAYERS))


@pytest.mark.parametrize("strategy", SEED_CONVS)
def test_seed_convs_equal_lax_conv_per_seed_with_gradients(strategy):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(SEEDS, 2, 8, 8, 3)), jnp.float32)
    kernels = [jnp.asarray(rng.normal(size=(SEEDS, k, k, 3, 4)), jnp.float32)
               for k, _, _ in CONV_LAYERS]
    grad = jax.value_and_grad(functools.partial(conv_layers_loss, networks.CONVS[strategy]),
                              argnums=(0, 1))
    program = jax.jit(jax.vmap(grad)).lower(x, kernels)
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


def test_seed_conv_is_part_of_the_program_with_the_same_numbers():
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    frames = jax.random.uniform(jax.random.PRNGKey(1), (SEEDS, 2, 64, 64, 3))

    def encoder(strategy):
        return networks.build(CFG, ACTION_DIM, strategy).encoder

    params = jax.vmap(encoder("grouped").init)(keys, frames)
    programs = {strategy: jax.jit(jax.vmap(encoder(strategy).apply)).lower(params, frames)
                for strategy in ("loop", "patches")}
    assert programs["loop"].as_text() != programs["patches"].as_text()
    loop, patches = (program.compile()(params, frames) for program in programs.values())
    chex.assert_trees_all_close(loop, patches, rtol=1e-4, atol=1e-5)
    # The factory: another strategy is another program; one seed ignores the strategy.
    assert seeds_steps("loop").train is not seeds_steps("patches").train
    assert make_steps(CFG, ACTION_DIM, 1, seed_conv="patches") is STEPS
    with pytest.raises(ValueError, match="seed_conv must be one of"):
        make_steps(CFG, ACTION_DIM, SEEDS, seed_conv="depthwise")


@pytest.fixture(scope="module")
def separate_pretrain(seeds):
    """Each seed's latent-only update on its own: [(state, metrics)]."""
    states, replays = seeds
    return [STEPS.pretrain(seed_slice(states, i), seed_slice(replays, i), 1)
            for i in range(SEEDS)]


# The fused test above runs the default strategy, and "grouped" is vmap's own rule (the conv
# test covers it); the rest run the latent update, where every convolution's gradient is, at
# one compile (~40 s on a CPU) each.
@pytest.mark.parametrize("strategy", [name for name in SEED_CONVS
                                      if name not in (DEFAULT_SEED_CONV, "grouped")])
def test_vmapped_seeds_pretrain_equals_separate_with_each_seed_conv(
        seeds, separate_pretrain, strategy):
    states, replays = seeds
    states = jax.tree.map(jnp.copy, states)
    got, metrics = seeds_steps(strategy).pretrain(states, replays, 1)
    for i, (state, seed_metrics) in enumerate(separate_pretrain):
        assert_updates_close(seed_slice(got, i), state)
        chex.assert_trees_all_close(seed_slice(metrics, i), seed_metrics, rtol=1e-4, atol=1e-4)


def test_mesh_rejects_batches_that_do_not_split_and_seeds():
    mesh = parallel.make_mesh(1)
    assert mesh.size == 1 and mesh.axis_names == ("data",)
    parallel.check_divisible(CFG, mesh)
    with pytest.raises(ValueError, match="devices"):
        parallel.make_mesh(len(jax.local_devices()) + 1)
    with pytest.raises(ValueError, match="num_seeds must be 1"):
        make_steps(CFG, ACTION_DIM, SEEDS, mesh=mesh)


@pytest.mark.slow(90)
def test_sharded_update_equals_unsharded(seeds, separate, tmp_path):
    states, replays = seeds
    save_tree(tmp_path / "state.npz", seed_slice(states, 0))
    save_tree(tmp_path / "replay.npz", seed_slice(replays, 0))
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
    steps = make_steps(CFG, ACTION_DIM, mesh=mesh)
    state_like = jax.eval_shape(steps.init_state, jax.ShapeDtypeStruct((1, 2), jnp.uint32))
    state = parallel.replicate(load_tree(folder / "state.npz", state_like), mesh)
    replay_like = jax.eval_shape(lambda: steps.init_replay(48))
    replay = parallel.replicate(load_tree(folder / "replay.npz", replay_like), mesh)

    compiled = steps.train.lower(state, replay, 1).compile()
    assert "all-reduce" in compiled.as_text()  # gradients summed across the devices
    state, metrics = compiled(state, replay)
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == DEVICES
    save_tree(folder / "sharded_state.npz", state)
    save_tree(folder / "sharded_metrics.npz", metrics)


if __name__ == "__main__":
    run_sharded(pathlib.Path(sys.argv[1]))
