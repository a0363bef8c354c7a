"""SAC on the latent (docs/algorithm.md §4) as pure loss functions.

Inputs coming from the latent model (latent states z, frame features) are expected to be
`stop_gradient`-ed by the caller: these losses train the actor, the critics and α only.
Shapes: N sequences, T transitions, F features, Z = z1 + z2, A action dims.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from slacjax import distributions as dist
from slacjax.networks import Networks


def actor_inputs(features: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The policy's inputs at the last two steps of a sequence.

    features [N, T+1, F], actions [N, T, A] -> (current, next), each [N, T·F + (T−1)·A]:
    current = f_0..f_T-1 with a_0..a_T-2 (the window ending at x_T-1, where a_T-1 was taken);
    next    = f_1..f_T   with a_1..a_T-1 (the window shifted by one step, for the target).
    """
    n = features.shape[0]

    def window(f, a):
        return jnp.concatenate([f.reshape(n, -1), a.reshape(n, -1)], axis=-1)

    return (window(features[:, :-1], actions[:, :-1]),
            window(features[:, 1:], actions[:, 1:]))


def sample_action(actor_params, inputs: jax.Array, key: jax.Array, nets: Networks):
    """a = tanh(u), u ~ N(mean, std) -> (action [N, A], log π(a) [N])."""
    mean, log_std = nets.actor.apply(actor_params, inputs)
    std = jnp.exp(log_std)
    u = dist.sample(key, mean, std)
    return jnp.tanh(u), dist.tanh_log_prob(u, mean, std)


def greedy_action(actor_params, inputs: jax.Array, nets: Networks) -> jax.Array:
    """tanh of the policy mean: [N, ·] -> [N, A]."""
    mean, _ = nets.actor.apply(actor_params, inputs)
    return jnp.tanh(mean)


def q_values(critic_params, z: jax.Array, action: jax.Array,
             nets: Networks) -> tuple[jax.Array, jax.Array]:
    return nets.critic.apply(critic_params, z, action)


def critic_loss(critic_params, target_critic_params, actor_params, alpha: jax.Array,
                z: jax.Array, z_next: jax.Array, action: jax.Array, reward: jax.Array,
                terminal: jax.Array, next_inputs: jax.Array, key: jax.Array, gamma: float,
                nets: Networks):
    """0.5·MSE of each critic to y = r + γ(1 − terminal)(min Q̄(z', a') − α log π(a'|·)).

    z, z_next [N, Z]; action [N, A]; reward, terminal [N]; a' ~ π at the shifted window.
    Gradients flow into `critic_params` only. -> (loss, metrics).
    """
    next_action, next_log_pi = sample_action(actor_params, next_inputs, key, nets)
    target_q1, target_q2 = q_values(target_critic_params, z_next, next_action, nets)
    soft_value = jnp.minimum(target_q1, target_q2) - alpha * next_log_pi
    target = jax.lax.stop_gradient(reward + gamma * (1.0 - terminal) * soft_value)
    q1, q2 = q_values(critic_params, z, action, nets)
    loss = 0.5 * jnp.mean(jnp.square(q1 - target)) + 0.5 * jnp.mean(jnp.square(q2 - target))
    return loss, {"critic_loss": loss, "q_mean": 0.5 * jnp.mean(q1 + q2),
                  "target_q_mean": jnp.mean(target)}


def actor_loss(actor_params, critic_params, alpha: jax.Array, z: jax.Array, inputs: jax.Array,
               key: jax.Array, nets: Networks):
    """mean(α log π(a|·) − min Q(z, a)), a ~ π -> (loss, (metrics, log π [N]))."""
    action, log_pi = sample_action(actor_params, inputs, key, nets)
    q1, q2 = q_values(critic_params, z, action, nets)
    loss = jnp.mean(alpha * log_pi - jnp.minimum(q1, q2))
    return loss, ({"actor_loss": loss, "entropy": -jnp.mean(log_pi)}, log_pi)


def alpha_loss(log_alpha: jax.Array, log_pi: jax.Array, target_entropy: float):
    """log α · stop_grad(−log π − H̄), averaged: α rises while the entropy is below H̄."""
    entropy_gap = jax.lax.stop_gradient(-log_pi - target_entropy)
    loss = jnp.mean(log_alpha * entropy_gap)
    return loss, {"alpha_loss": loss}


def polyak(target, online, tau: float):
    """target ← τ·online + (1 − τ)·target, leaf by leaf."""
    return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)
