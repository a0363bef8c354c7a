"""The fused update step: what one update moves; the factory's train / pretrain steps equal it,
scanned K steps equal K single steps, nothing recompiles, the state is donated.

The factory's steps run SMALL, whose network sizes all differ from the defaults.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from slacjax import latent, networks, parallel, update
from slacjax import replay as replay_lib
from slacjax.config import AgentConfig
from slacjax.steps import make_steps
from tests.helpers import ACTION_DIM, NETS, SMALL, smooth_batch, to_device
from tests.test_latent import reference_rollout

init_state = jax.jit(update.init_state, static_argnums=(0, 1))
plain_update = jax.jit(update.update, static_argnames=("cfg", "nets"))
STEPS = make_steps(SMALL, ACTION_DIM)
SMALL_NETS = networks.build(SMALL, ACTION_DIM)


def filled_replay(seed: int, episodes: int = 2, length: int = 14):
    """A small device replay holding `episodes` episodes of smooth frames."""
    add = jax.jit(replay_lib.add, donate_argnums=0)
    replay = replay_lib.init(48, ACTION_DIM)
    for episode in range(episodes):
        data = smooth_batch(seed + episode, batch_size=1, steps=length)
        replay = add(replay, data.frames[0, 0], np.zeros(ACTION_DIM, np.float32), 0.0, 0.0, True)
        for t in range(length):
            replay = add(replay, data.frames[0, t + 1], data.actions[0, t], data.rewards[0, t],
                         0.0, False)
    return replay


def one_seed(tree):
    """A pytree with a leading seed axis of 1, as the factory's programs take it."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf)[None], tree)


def assert_trees_close(a, b, **tolerances):
    chex.assert_trees_all_close(a, b, **tolerances)


def assert_states_close(a: update.TrainState, b: update.TrainState):
    """Two states from the same maths compiled differently.

    Adam's first step is lr·g/(|g| + ε): ±lr whatever the gradient's size, so where rounding
    noise flips the sign of a gradient that is zero up to summation order (the decoder's sums
    of large cancelling terms) a weight moves 2·lr apart (lr = 1e-4 for the latent model).
    """
    assert_trees_close(a.params.latent, b.params.latent, rtol=0, atol=2.5e-4)

    def rest(s):
        return s.params.actor, s.params.critic, s.target_critic, s.log_alpha, s.step, s.key

    assert_trees_close(rest(a), rest(b), rtol=2e-4, atol=2e-5)


@pytest.fixture(scope="module")
def replay():
    return one_seed(filled_replay(0))


def fresh_state(seed: int = 0):
    return STEPS.init_state(jax.random.PRNGKey(seed)[None])


def assert_same_update(got, want):
    """States and metrics of the same update computed in two formulations; the optimisers'
    moments hold the gradients (after one step, m = (1 − β1)·g)."""
    (state, metrics), (expected, expected_metrics) = got, want
    assert_states_close(state, expected)
    assert_trees_close(state.opt_state, expected.opt_state, rtol=1e-4, atol=1e-6)
    assert_trees_close(metrics, expected_metrics, rtol=1e-4, atol=1e-4)


FORMULATION_CFG = AgentConfig(batch_sac=2, batch_latent=2, hidden_dim=32, z1_dim=8,
                              z2_dim=16, feature_dim=24, latent_grad_clip=50.0)


def updates_of_both_formulations(count: int, jit: bool):
    """`count` updates from one state and batch by `update.update`, and by it with the
    step-by-step rollout it replaced (`reference_rollout`) -> ([(state, metrics)] per update,
    the same of the former)."""
    nets = networks.build(FORMULATION_CFG, ACTION_DIM)
    state = init_state(FORMULATION_CFG, ACTION_DIM, jax.random.PRNGKey(0))
    batch = to_device(smooth_batch(0, batch_size=2))
    keys = jax.random.split(jax.random.PRNGKey(1), count)

    def run():
        step = functools.partial(update.update, cfg=FORMULATION_CFG, nets=nets)
        step = jax.jit(step) if jit else step
        results, current = [], state
        for key in keys:
            current, metrics = step(current, batch, key)
            results.append((current, metrics))
        return results

    got = run()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(latent, "posterior_rollout", reference_rollout)
        return got, run()


def test_two_updates_equal_the_former_formulation():
    for got, want in zip(*updates_of_both_formulations(2, jit=True)):
        assert_same_update(got, want)


def test_an_update_without_jit_equals_the_former_formulation():
    (got,), (want,) = updates_of_both_formulations(1, jit=False)
    assert_same_update(got, want)


def test_one_update_moves_every_optimiser_and_the_targets_by_tau():
    # The losses it composes are checked with and without jit (tests/test_latent.py,
    # tests/test_sac.py); here the jitted composition, as training runs it.
    state = init_state(SMALL, ACTION_DIM, jax.random.PRNGKey(0))
    batch = to_device(smooth_batch(0, batch_size=SMALL.batch_sac))
    new_state, metrics = plain_update(state, batch, jax.random.PRNGKey(1), SMALL, SMALL_NETS)
    assert int(new_state.step) == 1
    for name, value in metrics.items():
        assert np.isfinite(value), name
    # every optimiser moved its parameters; targets moved by τ towards the new critic
    for group in ("latent", "actor", "critic"):
        moved = jax.tree.map(lambda a, b: jnp.any(a != b), getattr(state.params, group),
                             getattr(new_state.params, group))
        assert any(jax.tree.leaves(moved)), group
    expected_target = jax.tree.map(lambda t, o: 0.995 * t + 0.005 * o, state.target_critic,
                                   new_state.params.critic)
    assert_trees_close(new_state.target_critic, expected_target, rtol=1e-5, atol=1e-7)
    assert float(new_state.log_alpha) != 0.0


def test_the_factorys_init_is_the_plain_init_with_every_size_from_the_config():
    got = fresh_state()
    expected = init_state(SMALL, ACTION_DIM, jax.random.PRNGKey(0))
    chex.assert_trees_all_equal(got, one_seed(expected))
    kernel = got.params.latent["z2_prior"]["params"]["MLP_0"]["Dense_2"]["kernel"]
    chex.assert_shape(kernel, (1, SMALL.hidden_dim, 2 * SMALL.z2_dim))
    features = got.params.latent["encoder"]["params"]["Conv_4"]["kernel"]
    assert features.shape[-1] == SMALL.feature_dim


def test_one_train_step_equals_the_plain_step(replay):
    state = fresh_state()
    plain = jax.tree.map(lambda leaf: np.asarray(leaf[0]), state)
    # What train(K=1) does, spelled out: split the state's key, sample, update.
    key, k_sample, k_update = jax.random.split(plain.key, 3)
    batch = replay_lib.sample(jax.tree.map(lambda leaf: leaf[0], replay), k_sample,
                              SMALL.batch_sac, SMALL.sequence_length)
    expected, expected_metrics = plain_update(plain.replace(key=key), batch, k_update, SMALL,
                                              SMALL_NETS)
    got, metrics = STEPS.train(state, replay, 1)
    assert set(metrics) == set(expected_metrics)
    assert_states_close(got, one_seed(expected))
    assert_trees_close(metrics, one_seed(expected_metrics), rtol=1e-5, atol=1e-5)


@pytest.mark.slow(180)
def test_k_scanned_steps_equal_k_single_steps_and_nothing_recompiles(replay):
    twice, metrics = STEPS.train(fresh_state(), replay, 2)
    single, m1 = STEPS.train(fresh_state(), replay, 1)
    single, m2 = STEPS.train(single, replay, 1)
    assert_states_close(twice, single)
    assert_trees_close(metrics, jax.tree.map(lambda a, b: (a + b) / 2, m1, m2), rtol=1e-4,
                       atol=1e-4)

    # Warm: new data and new states of the same shapes compile nothing, nor does building the
    # steps again.
    compiled = STEPS.train._cache_size()
    other = one_seed(filled_replay(7, episodes=3, length=10))
    assert make_steps(SMALL, ACTION_DIM) is STEPS
    # (Once each: under the tests' fast-compile flag a scanned CPU step runs ~10× slower.)
    with jax.log_compiles(True):
        twice, _ = STEPS.train(twice, other, 2)
        single, _ = STEPS.train(single, other, 1)
    jax.block_until_ready(twice)
    assert STEPS.train._cache_size() == compiled


def test_a_fresh_state_beside_a_restored_replay_compiles_once(replay):
    """A checkpoint restores a replay committed to the first device; a fresh state beside it
    (benchmarks.latent_shift) must not compile the program again at its second step."""
    restored = jax.device_put(replay, parallel.local_device_sharding())
    state, _ = STEPS.pretrain(fresh_state(), restored, 1)
    compiled = STEPS.pretrain._cache_size()
    STEPS.pretrain(state, restored, 1)
    assert STEPS.pretrain._cache_size() == compiled


def test_train_steps_donate_the_state(replay):
    state = fresh_state()
    leaf = jax.tree.leaves(state.params.critic)[0]
    STEPS.train(state, replay, 1)
    assert leaf.is_deleted()


def test_pretrain_steps_change_only_the_latent_model(replay):
    state = fresh_state()
    before = jax.tree.map(np.asarray, state)
    after, metrics = STEPS.pretrain(state, replay, 1)
    assert set(metrics) == {"latent_loss", "kl", "image_nll", "reward_nll", "reward_mse",
                            "latent_grad_norm"}
    assert metrics["latent_loss"].shape == (1,) and np.isfinite(metrics["latent_loss"]).all()
    assert int(after.step[0]) == 1
    for group in ("actor", "critic"):
        assert_trees_close(getattr(after.params, group), getattr(before.params, group), rtol=0,
                           atol=0)
    assert_trees_close(after.target_critic, before.target_critic, rtol=0, atol=0)
    changed = jax.tree.map(lambda a, b: np.any(np.asarray(a) != b), after.params.latent,
                           before.params.latent)
    assert all(jax.tree.leaves(changed))


def test_fixed_alpha_stays_put():
    cfg = AgentConfig(batch_sac=2, batch_latent=2, learn_alpha=False, init_alpha=0.2)
    state = init_state(cfg, ACTION_DIM, jax.random.PRNGKey(0))
    new_state, metrics = plain_update(state, to_device(smooth_batch(0)), jax.random.PRNGKey(1),
                                      cfg, NETS)
    np.testing.assert_allclose(float(new_state.log_alpha), np.log(0.2), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["alpha"]), 0.2, rtol=1e-6)


def test_separate_latent_batch_split():
    batch = to_device(smooth_batch(0, batch_size=5))
    shared = AgentConfig(batch_sac=5, batch_latent=2)
    latent_part, sac_part = update.split_batch(batch, shared)
    assert latent_part.batch_size == 2 and sac_part.batch_size == 5
    np.testing.assert_array_equal(latent_part.frames, sac_part.frames[:2])
    separate = AgentConfig(batch_sac=3, batch_latent=2, separate_latent_batch=True)
    assert update.sampled_batch_size(separate) == 5
    latent_part, sac_part = update.split_batch(batch, separate)
    np.testing.assert_array_equal(latent_part.frames, batch.frames[:2])
    np.testing.assert_array_equal(sac_part.frames, batch.frames[2:])


def test_bad_configs_fail_loudly():
    with pytest.raises(ValueError, match="batch_latent"):
        AgentConfig(batch_sac=2, batch_latent=4)
    with pytest.raises(ValueError, match="dtype"):
        AgentConfig(dtype="float16")
    with pytest.raises(ValueError, match="batch_sac"):
        AgentConfig(batch_sac=0)


def test_latent_grad_clip_bounds_the_gradient_adam_sees():
    """Adam's first moment after one step is (1 − β1)·g: with the clip, g is the clipped
    gradient (norm ≤ latent_grad_clip); without it, the raw one."""
    cfg = AgentConfig(batch_sac=2, batch_latent=2, latent_grad_clip=0.5)
    state = init_state(cfg, ACTION_DIM, jax.random.PRNGKey(0))
    batch, key = to_device(smooth_batch(0)), jax.random.PRNGKey(1)
    _, clipped_metrics = plain_update(state, batch, key, cfg, NETS)
    raw_norm = float(clipped_metrics["latent_grad_norm"])
    assert raw_norm > 0.5  # the metric is the gradient before the clip
    grads = jax.tree.map(lambda leaf: jnp.full_like(leaf, 3.0), state.params.latent)
    for clip, expected in ((0.5, 0.5), (0.0, float(optax.global_norm(grads)))):
        opt = update.optimizers(AgentConfig(latent_grad_clip=clip))["latent"]
        _, opt_state = opt.update(grads, opt.init(state.params.latent), state.params.latent)
        adam_state = opt_state[-1][0] if clip else opt_state[0]
        np.testing.assert_allclose(float(optax.global_norm(adam_state.mu)), 0.1 * expected,
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="latent_grad_clip"):
        AgentConfig(latent_grad_clip=-1.0)
