"""The SLAC latent variable model as pure functions over a params dict (docs/algorithm.md §2, §3).

Shapes: B sequences, T = sequence_length transitions, T+1 frames; F = feature_dim,
A = action dims. Latent parameters: one entry per network of `networks.LATENT_NETWORKS`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from slacjax import distributions as dist
from slacjax import networks
from slacjax.batch import Batch
from slacjax.config import AgentConfig
from slacjax.networks import Networks, build


def init_latent_params(cfg: AgentConfig, action_dim: int, key: jax.Array) -> dict:
    nets = build(cfg, action_dim).latent
    z1 = jnp.zeros((1, cfg.z1_dim))
    z2 = jnp.zeros((1, cfg.z2_dim))
    feature = jnp.zeros((1, cfg.feature_dim))
    action = jnp.zeros((1, action_dim))
    example_inputs = {
        "encoder": jnp.zeros((1, cfg.image_size, cfg.image_size, 3)),
        "decoder": jnp.zeros((1, cfg.z_dim)),
        "z1_posterior_init": feature,
        "z1_posterior": jnp.concatenate([feature, z2, action], -1),
        "z2_prior_init": z1,
        "z1_prior": jnp.concatenate([z2, action], -1),
        "z2_prior": jnp.concatenate([z1, z2, action], -1),
        "reward": jnp.zeros((1, 2 * cfg.z_dim + action_dim)),
    }
    keys = jax.random.split(key, len(nets))
    return {name: nets[name].init(k, example_inputs[name])
            for k, name in zip(keys, sorted(nets))}


def apply_net(params: dict, name: str, nets: Networks, *inputs: jax.Array):
    """Applies network `name` to the concatenation of `inputs` along the last axis."""
    x = jnp.concatenate(inputs, axis=-1) if len(inputs) > 1 else inputs[0]
    return getattr(nets, name).apply(params[name], x)


def encode(params: dict, frames: jax.Array, nets: Networks) -> jax.Array:
    """uint8 frames [..., 64, 64, 3] -> features float32 [..., F] (leading axes folded)."""
    lead = frames.shape[:-3]
    images = frames.reshape((-1,) + frames.shape[-3:]).astype(jnp.float32) / 255.0
    features = apply_net(params, "encoder", nets, images.astype(nets.encoder.dtype))
    return features.astype(jnp.float32).reshape(lead + (nets.encoder.feature_dim,))


def decode(params: dict, z1: jax.Array, z2: jax.Array, nets: Networks) -> jax.Array:
    """z1 [..., z1_dim], z2 [..., z2_dim] -> mean image float32 [..., 64, 64, 3]."""
    lead = z1.shape[:-1]
    z = jnp.concatenate([z1, z2], -1)
    images = apply_net(params, "decoder", nets, z.reshape(-1, z.shape[-1])).astype(jnp.float32)
    return images.reshape(lead + images.shape[1:])


class Rollout(NamedTuple):
    """Posterior samples and the posterior of z1 at every frame: [B, T+1, ·]."""

    z1: jax.Array
    z2: jax.Array
    z1_mean: jax.Array
    z1_std: jax.Array


def step_noise(key: jax.Array, steps: int, *shapes: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """Standard normal noise of a rollout's `steps` steps, drawn at once: one array [T, *shape]
    per shape, step t's the draws of jax.random.split(split(key, T)[t], len(shapes))."""
    keys = jax.vmap(jax.random.split, in_axes=(0, None))(jax.random.split(key, steps),
                                                         len(shapes))
    return tuple(jax.vmap(functools.partial(jax.random.normal, shape=shape))(keys[:, index])
                 for index, shape in enumerate(shapes))


def posterior_rollout(params: dict, features: jax.Array, actions: jax.Array, key: jax.Array,
                      nets: Networks) -> Rollout:
    """Filters the sequence: features [B, T+1, F], actions [B, T, A] -> Rollout.

    t = 0: z1 ~ q(z1_0 | f_0), z2 ~ p(z2_0 | z1_0);
    t ≥ 1: z1 ~ q(z1_t | f_t, z2_t-1, a_t-1), z2 ~ p(z2_t | z1_t, z2_t-1, a_t-1).

    Only what depends on the previous step runs step by step: the noise and the two heads'
    first-layer products with the features and actions are computed for all steps at once.
    """
    batch, steps = actions.shape[:2]
    feature_dim, z1_dim = nets.encoder.feature_dim, nets.z1_posterior.dim
    z2_dim = nets.z2_prior.dim
    chex.assert_shape(features, (batch, steps + 1, feature_dim))
    key_init, key_steps = jax.random.split(key)
    k1, k2 = jax.random.split(key_init)
    z1_mean0, z1_std0 = apply_net(params, "z1_posterior_init", nets, features[:, 0])
    z1_0 = dist.sample(k1, z1_mean0, z1_std0)
    z2_0 = dist.sample(k2, *apply_net(params, "z2_prior_init", nets, z1_0))

    # The first layers' kernels by input rows: q(z1) reads [f, z2, a], p(z2) reads [z1, z2, a].
    posterior, prior = (networks.head_layers(params[name])["Dense_0"]
                        for name in ("z1_posterior", "z2_prior"))
    post_f, post_z2, post_a = jnp.split(posterior["kernel"], [feature_dim, feature_dim + z2_dim])
    prior_z1, prior_z2, prior_a = jnp.split(prior["kernel"], [z1_dim, z1_dim + z2_dim])
    features_t, actions_t = jnp.swapaxes(features[:, 1:], 0, 1), jnp.swapaxes(actions, 0, 1)
    post_first = features_t @ post_f + actions_t @ post_a + posterior["bias"]  # [T, B, H]
    prior_first = actions_t @ prior_a + prior["bias"]  # [T, B, H]
    from_z2 = jnp.concatenate([post_z2, prior_z2], axis=1)  # both heads' z2 rows [Z2, 2H]
    noise = step_noise(key_steps, steps, (batch, z1_dim), (batch, z2_dim))

    def posterior_step(z2_prev, inputs):
        post_t, prior_t, noise_z1, noise_z2 = inputs
        post_z2_t, prior_z2_t = jnp.split(z2_prev @ from_z2, 2, axis=-1)
        z1_mean, z1_std = networks.gaussian_head_after_first(params["z1_posterior"],
                                                             post_t + post_z2_t)
        z1 = z1_mean + z1_std * noise_z1
        z2_mean, z2_std = networks.gaussian_head_after_first(
            params["z2_prior"], prior_t + prior_z2_t + z1 @ prior_z1)
        z2 = z2_mean + z2_std * noise_z2
        return z2, (z1, z2, z1_mean, z1_std)

    # Unrolled: 8 small steps; a device while-loop would cost more in launches than it saves.
    _, outputs = jax.lax.scan(posterior_step, z2_0, (post_first, prior_first, *noise),
                              unroll=True)
    first = (z1_0, z2_0, z1_mean0, z1_std0)
    stacked = [jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)
               for x0, xs in zip(first, outputs)]
    return Rollout(*stacked)


def z1_prior_on_posterior(params: dict, rollout: Rollout, actions: jax.Array,
                          nets: Networks) -> tuple[jax.Array, jax.Array]:
    """p(z1_t | z2_t-1, a_t-1) for t = 1..T, fed the POSTERIOR z2 samples: -> [B, T, z1] ×2.

    docs/algorithm.md §3: the prior is evaluated on the posterior samples, not rolled out on its
    own.
    """
    return apply_net(params, "z1_prior", nets, rollout.z2[:, :-1], actions)


def reward_distribution(params: dict, rollout: Rollout, actions: jax.Array,
                        nets: Networks) -> tuple[jax.Array, jax.Array]:
    """p(r_t | z_t, a_t, z_t+1) for t = 0..T-1: -> mean, std [B, T]."""
    z = jnp.concatenate([rollout.z1, rollout.z2], -1)
    mean, std = apply_net(params, "reward", nets, z[:, :-1], actions, z[:, 1:])
    return mean[..., 0], std[..., 0]


def reward_mask(terminals: jax.Array) -> jax.Array:
    """1 for rewards at or before the first termination, 0 after it: [B, T] -> [B, T]."""
    terminated_before = jnp.cumsum(terminals, axis=1) - terminals
    return (terminated_before == 0).astype(jnp.float32)


def elbo_loss(params: dict, batch: Batch, key: jax.Array, cfg: AgentConfig, nets: Networks):
    """Negative ELBO (docs/algorithm.md §3) averaged over the batch -> (loss, (metrics, features)).

    loss = Σ_t KL(q(z1_t) ‖ p(z1_t)) − Σ_t log p(x_t | z_t) − Σ_t mask_t · log p(r_t | ·).
    features [B, T+1, F]: the batch's frames encoded, for SAC to reuse (`update.sac_inputs`).
    """
    batch_size, steps = batch.rewards.shape
    features = encode(params, batch.frames, nets)
    rollout = posterior_rollout(params, features, batch.actions, key, nets)

    prior_mean, prior_std = z1_prior_on_posterior(params, rollout, batch.actions, nets)
    prior_mean = jnp.concatenate([jnp.zeros_like(rollout.z1_mean[:, :1]), prior_mean], 1)
    prior_std = jnp.concatenate([jnp.ones_like(rollout.z1_std[:, :1]), prior_std], 1)
    kl = dist.kl(rollout.z1_mean, rollout.z1_std, prior_mean, prior_std).sum(1)

    images = batch.frames.astype(jnp.float32) / 255.0
    predicted = decode(params, rollout.z1, rollout.z2, nets)
    chex.assert_equal_shape([predicted, images])
    pixel_std = jnp.sqrt(cfg.decoder_var)
    image_ll = dist.log_prob(images.reshape(batch_size, steps + 1, -1),
                             predicted.reshape(batch_size, steps + 1, -1), pixel_std).sum(1)

    reward_mean, reward_std = reward_distribution(params, rollout, batch.actions, nets)
    reward_ll = dist.log_prob(batch.rewards[..., None], reward_mean[..., None],
                              reward_std[..., None])
    mask = reward_mask(batch.terminals)
    reward_ll = (reward_ll * mask).sum(1)
    # The reward head's error in reward units: what its NLL hides behind the learned scale.
    reward_mse = jnp.sum(jnp.square(reward_mean - batch.rewards) * mask) / jnp.sum(mask)

    loss = jnp.mean(kl - image_ll - reward_ll)
    metrics = {"latent_loss": loss, "kl": kl.mean(), "image_nll": -image_ll.mean(),
               "reward_nll": -reward_ll.mean(), "reward_mse": reward_mse}
    return loss, (metrics, features)


def reconstruct_and_imagine(params: dict, batch: Batch, key: jax.Array, nets: Networks,
                            context: int = 1) -> tuple[jax.Array, jax.Array]:
    """The SLAC paper's qualitative figure -> (posterior, prior) images [B, T+1, 64, 64, 3],
    in [0, 1].

    posterior: decoded posterior samples of every frame. prior: the first `context` frames
    filtered by the posterior, then the prior rolled out open-loop on the batch's actions.
    """
    key_post, key_prior = jax.random.split(key)
    features = encode(params, batch.frames, nets)
    rollout = posterior_rollout(params, features, batch.actions, key_post, nets)
    posterior_images = decode(params, rollout.z1, rollout.z2, nets)

    def prior_step(carry, inputs):
        z1, z2 = carry
        action, step_key, observed = inputs
        k_z1, k_z2 = jax.random.split(step_key)
        z1_next = dist.sample(k_z1, *apply_net(params, "z1_prior", nets, z2, action))
        z2_next = dist.sample(k_z2, *apply_net(params, "z2_prior", nets, z1_next, z2, action))
        z1_next = jnp.where(observed[0], observed[1], z1_next)
        z2_next = jnp.where(observed[0], observed[2], z2_next)
        return (z1_next, z2_next), (z1_next, z2_next)

    steps = batch.actions.shape[1]
    is_context = jnp.arange(1, steps + 1) < context
    observed = (is_context, jnp.swapaxes(rollout.z1[:, 1:], 0, 1),
                jnp.swapaxes(rollout.z2[:, 1:], 0, 1))
    inputs = (jnp.swapaxes(batch.actions, 0, 1), jax.random.split(key_prior, steps), observed)
    _, (z1s, z2s) = jax.lax.scan(prior_step, (rollout.z1[:, 0], rollout.z2[:, 0]), inputs)
    z1 = jnp.concatenate([rollout.z1[:, :1], jnp.swapaxes(z1s, 0, 1)], 1)
    z2 = jnp.concatenate([rollout.z2[:, :1], jnp.swapaxes(z2s, 0, 1)], 1)
    prior_images = decode(params, z1, z2, nets)
    return jnp.clip(posterior_images, 0, 1), jnp.clip(prior_images, 0, 1)
