"""The latent model: rollout shapes, priors on posterior samples, ELBO terms, learning."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from slacjax import distributions as dist
from slacjax import latent
from slacjax.config import AgentConfig
from slacjax.networks import build
from tests.helpers import ACTION_DIM, NETS, TINY, smooth_batch, to_device

init_params = jax.jit(latent.init_latent_params, static_argnums=(0, 1))


def reference_rollout(params, features, actions, key, nets) -> latent.Rollout:
    """`latent.posterior_rollout` step by step, every head on its whole input and the noise
    drawn inside the step: the formulation it replaced, for equivalence tests."""
    key_init, key_steps = jax.random.split(key)
    k1, k2 = jax.random.split(key_init)
    z1_mean0, z1_std0 = latent.apply_net(params, "z1_posterior_init", nets, features[:, 0])
    z1_0 = dist.sample(k1, z1_mean0, z1_std0)
    z2_0 = dist.sample(k2, *latent.apply_net(params, "z2_prior_init", nets, z1_0))

    def posterior_step(z2_prev, inputs):
        feature, action, step_key = inputs
        k_z1, k_z2 = jax.random.split(step_key)
        z1_mean, z1_std = latent.apply_net(params, "z1_posterior", nets, feature, z2_prev, action)
        z1 = dist.sample(k_z1, z1_mean, z1_std)
        z2 = dist.sample(k_z2, *latent.apply_net(params, "z2_prior", nets, z1, z2_prev, action))
        return z2, (z1, z2, z1_mean, z1_std)

    time_major = (jnp.swapaxes(features[:, 1:], 0, 1), jnp.swapaxes(actions, 0, 1),
                  jax.random.split(key_steps, actions.shape[1]))
    _, outputs = jax.lax.scan(posterior_step, z2_0, time_major)
    first = (z1_0, z2_0, z1_mean0, z1_std0)
    return latent.Rollout(*[jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)
                            for x0, xs in zip(first, outputs)])


def test_posterior_rollout_shapes():
    params = init_params(TINY, ACTION_DIM, jax.random.PRNGKey(0))
    batch = to_device(smooth_batch(0))
    features = jax.jit(latent.encode, static_argnums=2)(params, batch.frames, NETS)
    chex.assert_shape(features, (2, 9, 256))
    rollout = latent.posterior_rollout(params, features, batch.actions, jax.random.PRNGKey(1), NETS)
    chex.assert_shape([rollout.z1, rollout.z1_mean, rollout.z1_std], (2, 9, 32))
    chex.assert_shape(rollout.z2, (2, 9, 256))
    assert jnp.all(rollout.z1_std > 0)


class TestRolloutFormulation(chex.TestCase):
    """The rollout with its step-independent work hoisted equals the step-by-step one: the
    same noise, the same samples, the same gradients (float32 summation order aside)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_samples_and_gradients_equal_the_step_by_step_rollout(self):
        params = init_params(TINY, ACTION_DIM, jax.random.PRNGKey(0))
        actions = jnp.asarray(smooth_batch(0).actions)
        features = jax.random.normal(jax.random.PRNGKey(4), (2, 9, TINY.feature_dim))

        def total(rollout_fn, params, features, key):
            rollout = rollout_fn(params, features, actions, key, NETS)
            return sum(jnp.sum(jnp.sin(x)) for x in rollout), rollout

        for seed in range(3):
            key = jax.random.PRNGKey(seed)
            (_, got), grads = self.variant(jax.value_and_grad(
                functools.partial(total, latent.posterior_rollout), (0, 1), has_aux=True))(
                params, features, key)
            (_, want), want_grads = jax.value_and_grad(
                functools.partial(total, reference_rollout), (0, 1), has_aux=True)(
                params, features, key)
            chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
            chex.assert_trees_all_close(grads, want_grads, rtol=1e-4, atol=1e-5)


def test_prior_is_fed_the_previous_posterior_z2():
    params = init_params(TINY, ACTION_DIM, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    z2 = jnp.asarray(rng.normal(size=(2, 9, 256)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-1, 1, size=(2, 8, ACTION_DIM)), jnp.float32)
    rollout = latent.Rollout(z1=jnp.zeros((2, 9, 32)), z2=z2, z1_mean=None, z1_std=None)
    mean, std = latent.z1_prior_on_posterior(params, rollout, actions, NETS)
    chex.assert_shape([mean, std], (2, 8, 32))
    for t in range(1, 9):  # prior of step t from posterior z2 of step t-1 and a_{t-1}
        expected = latent.apply_net(params, "z1_prior", NETS, z2[:, t - 1], actions[:, t - 1])
        np.testing.assert_allclose(mean[:, t - 1], expected[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(std[:, t - 1], expected[1], rtol=1e-5, atol=1e-5)


def test_reward_mask_stops_after_termination():
    terminals = jnp.array([[0, 0, 1, 0, 0, 0, 0, 0], [0] * 7 + [1]], jnp.float32)
    np.testing.assert_array_equal(latent.reward_mask(terminals),
                                  [[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8])


class TestElbo(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_terms_match_an_independent_computation(self):
        params = init_params(TINY, ACTION_DIM, jax.random.PRNGKey(0))
        batch = to_device(smooth_batch(1))
        batch = batch.replace(terminals=batch.terminals.at[0, 5].set(1.0))
        key = jax.random.PRNGKey(3)
        elbo = self.variant(functools.partial(latent.elbo_loss, cfg=TINY, nets=NETS))
        loss, (metrics, returned_features) = elbo(params, batch, key)

        # Recompute every term step by step with scipy, from the same posterior samples.
        features = latent.encode(params, batch.frames, NETS)
        np.testing.assert_allclose(returned_features, features, rtol=1e-5, atol=1e-5)
        rollout = latent.posterior_rollout(params, features, batch.actions, key, NETS)
        q_mean, q_std = np.asarray(rollout.z1_mean), np.asarray(rollout.z1_std)
        kl = np.zeros(2)
        for t in range(9):
            if t == 0:
                p_mean, p_std = np.zeros((2, 32)), np.ones((2, 32))
            else:
                p_mean, p_std = map(np.asarray, latent.apply_net(
                    params, "z1_prior", NETS, rollout.z2[:, t - 1], batch.actions[:, t - 1]))
            kl += (np.log(p_std / q_std[:, t]) + (q_std[:, t] ** 2 + (q_mean[:, t] - p_mean) ** 2)
                   / (2 * p_std**2) - 0.5).sum(-1)
        images = np.asarray(batch.frames, np.float64) / 255.0
        predicted = np.asarray(latent.decode(params, rollout.z1, rollout.z2, NETS))
        image_ll = stats.norm(predicted, np.sqrt(TINY.decoder_var)).logpdf(images)
        image_ll = image_ll.reshape(2, -1).sum(-1)
        r_mean, r_std = map(np.asarray, latent.reward_distribution(params, rollout, batch.actions,
                                                                   NETS))
        reward_ll = stats.norm(r_mean, r_std).logpdf(np.asarray(batch.rewards))
        reward_ll[0, 6:] = 0.0  # after the termination at step 5
        reward_ll = reward_ll.sum(-1)

        np.testing.assert_allclose(metrics["kl"], kl.mean(), rtol=1e-3)
        np.testing.assert_allclose(metrics["image_nll"], -image_ll.mean(), rtol=1e-4)
        np.testing.assert_allclose(metrics["reward_nll"], -reward_ll.mean(), rtol=1e-3, atol=1e-3)
        squared = (r_mean - np.asarray(batch.rewards)) ** 2
        kept = np.ones_like(squared, bool)
        kept[0, 6:] = False
        np.testing.assert_allclose(metrics["reward_mse"], squared[kept].mean(), rtol=1e-4)
        np.testing.assert_allclose(loss, (kl - image_ll - reward_ll).mean(), rtol=1e-4)


def test_latent_loss_halves_on_a_fixed_batch():
    # One sequence of 9 frames keeps this CPU-sized; the paper's Adam learning rate (1e-4).
    cfg = AgentConfig(batch_sac=1, batch_latent=1)
    params = init_params(cfg, ACTION_DIM, jax.random.PRNGKey(0))
    batch = to_device(smooth_batch(2, batch_size=1))
    opt = optax.adam(cfg.lr_latent)

    # A jitted step called from Python: XLA:CPU runs convolutions inside a scanned loop ~10×
    # slower.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, step_key):
        (loss, _), grads = jax.value_and_grad(latent.elbo_loss, has_aux=True)(
            params, batch, step_key, cfg, build(cfg, ACTION_DIM))
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = opt.init(params), []
    for step_key in jax.random.split(jax.random.PRNGKey(0), 60):
        params, opt_state, loss = step(params, opt_state, step_key)
        losses.append(loss)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert losses[-5:].mean() < 0.5 * losses[:3].mean(), (losses[:3], losses[-5:])


def test_reconstruction_and_imagination_shapes():
    params = init_params(TINY, ACTION_DIM, jax.random.PRNGKey(0))
    batch = to_device(smooth_batch(3))
    posterior, prior = jax.jit(latent.reconstruct_and_imagine, static_argnums=(3, 4))(
        params, batch, jax.random.PRNGKey(0), NETS, 2)
    chex.assert_shape([posterior, prior], (2, 9, 64, 64, 3))
    assert float(posterior.min()) >= 0 and float(posterior.max()) <= 1
    # The context frames are the posterior's own samples.
    np.testing.assert_allclose(prior[:, :2], posterior[:, :2], atol=1e-5)
