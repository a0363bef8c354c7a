"""SAC losses: stop-gradient to the model, target arithmetic, temperature direction, fitting."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from slacjax import latent, sac, update
from tests.helpers import ACTION_DIM, NETS, TINY, smooth_batch, to_device


def test_actor_windows_select_the_right_steps():
    features = jnp.arange(9)[None, :, None] * jnp.ones((1, 9, 2))
    actions = 100 + jnp.arange(8)[None, :, None] * jnp.ones((1, 8, 1))
    now, nxt = sac.actor_inputs(features, actions)
    np.testing.assert_array_equal(now[0], np.r_[np.repeat(np.arange(8), 2), 100 + np.arange(7)])
    np.testing.assert_array_equal(nxt[0], np.r_[np.repeat(np.arange(1, 9), 2), 101 + np.arange(7)])


def test_sac_losses_give_exactly_zero_gradient_to_the_latent_model():
    state = jax.jit(update.init_state, static_argnums=(0, 1))(TINY, ACTION_DIM,
                                                              jax.random.PRNGKey(0))
    batch = to_device(smooth_batch(0))
    p = state.params

    def sac_objective(latent_params):
        # The head's features come from the ELBO, with their gradient path to the model.
        encoded = latent.encode(latent_params, batch.frames[:1], NETS)
        z, z_next, now, nxt = update.sac_inputs(latent_params, batch, jax.random.PRNGKey(1), NETS,
                                                encoded)
        critic, _ = sac.critic_loss(p.critic, state.target_critic, p.actor, 1.0, z, z_next,
                                    batch.actions[:, -1], batch.rewards[:, -1],
                                    batch.terminals[:, -1], nxt, jax.random.PRNGKey(2), 0.99,
                                    NETS)
        actor, _ = sac.actor_loss(p.actor, p.critic, 1.0, z, now, jax.random.PRNGKey(3), NETS)
        return critic + actor

    grads = jax.grad(sac_objective)(p.latent)
    assert set(grads) == set(p.latent)
    for leaf in jax.tree.leaves(grads):
        assert jnp.all(leaf == 0.0)


def test_sac_inputs_reuse_features_encoded_before_exactly():
    params = jax.jit(update.init_state, static_argnums=(0, 1))(TINY, ACTION_DIM,
                                                               jax.random.PRNGKey(0)).params
    batch, key = to_device(smooth_batch(0)), jax.random.PRNGKey(1)
    sac_inputs = jax.jit(functools.partial(update.sac_inputs, nets=NETS))
    all_encoded_here = sac_inputs(params.latent, batch, key)
    for head in (1, 2):
        encoded = latent.encode(params.latent, batch.frames[:head], NETS)
        chex.assert_trees_all_close(sac_inputs(params.latent, batch, key, encoded=encoded),
                                    all_encoded_here, rtol=1e-5, atol=1e-5)


class TestCriticLoss(chex.TestCase):

    @chex.variants(with_jit=True, without_jit=True)
    def test_critic_target_arithmetic(self):
        key = jax.random.PRNGKey(0)
        z, z_next = jax.random.normal(key, (2, 5, 288))
        action = jnp.full((5, ACTION_DIM), 0.3)
        reward = jnp.arange(5.0)
        terminal = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0])
        critic = NETS.critic.init(key, z, action)
        target_critic = jax.tree.map(lambda x: x * 0.5, critic)
        state = update.init_state(TINY, ACTION_DIM, key)
        nxt = jax.random.normal(key, (5, update.actor_input_dim(TINY, ACTION_DIM)))
        alpha, gamma, k = 0.7, 0.9, jax.random.PRNGKey(5)
        critic_loss = self.variant(functools.partial(sac.critic_loss, gamma=gamma, nets=NETS))
        loss, metrics = critic_loss(critic, target_critic, state.params.actor, alpha, z, z_next,
                                    action, reward, terminal, nxt, k)
        a_next, log_pi = sac.sample_action(state.params.actor, nxt, k, NETS)
        tq1, tq2 = NETS.critic.apply(target_critic, z_next, a_next)
        y = reward + gamma * (1 - terminal) * (np.minimum(tq1, tq2) - alpha * log_pi)
        q1, q2 = NETS.critic.apply(critic, z, action)
        np.testing.assert_allclose(metrics["target_q_mean"], y.mean(), rtol=1e-5)
        expected = 0.5 * np.mean((q1 - y) ** 2) + 0.5 * np.mean((q2 - y) ** 2)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(y)[[1, 3]], [1.0, 3.0])  # terminal: no bootstrap


def test_polyak_moves_targets_by_tau():
    target = {"w": jnp.array([1.0, 2.0])}
    online = {"w": jnp.array([3.0, -2.0])}
    moved = sac.polyak(target, online, 0.005)
    np.testing.assert_allclose(moved["w"], [1.0 + 0.005 * 2.0, 2.0 - 0.005 * 4.0], rtol=1e-6)


def test_alpha_rises_below_target_entropy_and_falls_above():
    opt = optax.adam(3e-4)
    target_entropy = -3.0
    for log_pi, direction in [(jnp.full((8,), 5.0), +1), (jnp.full((8,), -10.0), -1)]:
        # entropy estimate −log π = −5 < −3: α must rise; 10 > −3: α must fall.
        log_alpha = jnp.zeros(())
        grad, _ = jax.grad(sac.alpha_loss, has_aux=True)(log_alpha, log_pi, target_entropy)
        updates, _ = opt.update(grad, opt.init(log_alpha))
        assert direction * float(optax.apply_updates(log_alpha, updates)) > 0


def test_critic_fits_a_toy_target():
    key = jax.random.PRNGKey(0)
    kz, ka = jax.random.split(key)
    z = jax.random.normal(kz, (256, 288))
    action = jax.random.uniform(ka, (256, ACTION_DIM), minval=-1, maxval=1)
    reward = jnp.sin(z[:, 0]) + action[:, 0] * z[:, 1]
    terminal = jnp.ones(256)  # y = r exactly
    critic = NETS.critic.init(key, z, action)
    actor = update.init_state(TINY, ACTION_DIM, key).params.actor
    nxt = jnp.zeros((256, update.actor_input_dim(TINY, ACTION_DIM)))
    opt = optax.adam(1e-3)

    @jax.jit
    def fit(critic, opt_state):
        def step(carry, _):
            critic, opt_state = carry
            (loss, _), grads = jax.value_and_grad(sac.critic_loss, has_aux=True)(
                critic, critic, actor, 1.0, z, z, action, reward, terminal, nxt, key, 0.99,
                NETS)
            updates, opt_state = opt.update(grads, opt_state)
            return (optax.apply_updates(critic, updates), opt_state), loss
        return jax.lax.scan(step, (critic, opt_state), None, length=400)

    _, losses = fit(critic, opt.init(critic))
    assert float(losses[-1]) < 0.05 * float(losses[0]), (losses[0], losses[-1])
