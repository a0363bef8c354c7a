"""The training state and the fused update step (docs/algorithm.md §5), as pure functions.

`update` computes the latent, critic, actor and α losses and their gradients from the
parameters before the step (`gradients`), then applies the four Adam optimisers and moves the
critic targets (`apply_gradients`). `slacjax.steps` jits them.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from slacjax import latent, networks, sac
from slacjax import replay as replay_lib
from slacjax.batch import Batch
from slacjax.config import AgentConfig
from slacjax.networks import Networks


@struct.dataclass
class Params:
    latent: dict
    actor: dict
    critic: dict


@struct.dataclass
class OptStates:
    latent: optax.OptState
    actor: optax.OptState
    critic: optax.OptState
    alpha: optax.OptState


@struct.dataclass
class TrainState:
    params: Params
    target_critic: dict
    log_alpha: jax.Array  # []
    opt_state: OptStates
    step: jax.Array  # int32 [], updates applied (latent-only ones included)
    key: jax.Array  # PRNG key for sampling batches and the updates' noise


def optimizers(cfg: AgentConfig) -> dict[str, optax.GradientTransformation]:
    latent_opt = optax.adam(cfg.lr_latent)
    if cfg.latent_grad_clip > 0:
        latent_opt = optax.chain(optax.clip_by_global_norm(cfg.latent_grad_clip), latent_opt)
    return {"latent": latent_opt, "actor": optax.adam(cfg.lr_actor),
            "critic": optax.adam(cfg.lr_critic), "alpha": optax.adam(cfg.lr_alpha)}


def actor_input_dim(cfg: AgentConfig, action_dim: int) -> int:
    steps = cfg.sequence_length
    return steps * cfg.feature_dim + (steps - 1) * action_dim


def init_state(cfg: AgentConfig, action_dim: int, key: jax.Array) -> TrainState:
    k_latent, k_actor, k_critic, k_state = jax.random.split(key, 4)
    nets = networks.build(cfg, action_dim)
    params = Params(
        latent=latent.init_latent_params(cfg, action_dim, k_latent),
        actor=nets.actor.init(k_actor, jnp.zeros((1, actor_input_dim(cfg, action_dim)))),
        critic=nets.critic.init(k_critic, jnp.zeros((1, cfg.z_dim)), jnp.zeros((1, action_dim))),
    )
    log_alpha = jnp.asarray(jnp.log(cfg.init_alpha), jnp.float32)
    opts = optimizers(cfg)
    opt_state = OptStates(latent=opts["latent"].init(params.latent),
                          actor=opts["actor"].init(params.actor),
                          critic=opts["critic"].init(params.critic),
                          alpha=opts["alpha"].init(log_alpha))
    # A copy, not an alias: the state is donated, and one buffer cannot be donated twice.
    target_critic = jax.tree.map(jnp.copy, params.critic)
    return TrainState(params=params, target_critic=target_critic, log_alpha=log_alpha,
                      opt_state=opt_state, step=jnp.zeros((), jnp.int32), key=k_state)


def sampled_batch_size(cfg: AgentConfig) -> int:
    """Sequences one update samples: the SAC batch, plus a latent batch if kept separate."""
    return cfg.batch_sac + (cfg.batch_latent if cfg.separate_latent_batch else 0)


def split_batch(batch: Batch, cfg: AgentConfig) -> tuple[Batch, Batch]:
    """-> (latent batch, SAC batch). By default the latent batch is the SAC batch's head."""
    if cfg.separate_latent_batch:
        return batch.take(0, cfg.batch_latent), batch.take(cfg.batch_latent, batch.batch_size)
    return batch.take(0, cfg.batch_latent), batch


def optimiser_step(opt: optax.GradientTransformation, params, grads, opt_state):
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def sac_inputs(latent_params: dict, batch: Batch, key: jax.Array, nets: Networks,
               encoded: jax.Array | None = None):
    """What SAC reads from the model, all behind stop_gradient -> (z, z_next, now, next).

    z, z_next [N, Z] are the last two posterior samples of one rollout; now/next are the
    actor's input windows [N, T·F + (T−1)·A]. `encoded` [n, T+1, F], n ≤ N: the features of
    the batch's first n sequences under the same parameters, already computed (the latent
    batch is the SAC batch's head), so only the other N − n are encoded here.
    """
    latent_params = jax.lax.stop_gradient(latent_params)
    if encoded is None:
        features = latent.encode(latent_params, batch.frames, nets)
    else:
        chex.assert_equal(encoded.shape[1:],
                          batch.frames.shape[1:2] + (nets.encoder.feature_dim,))
        rest = batch.frames[encoded.shape[0]:]
        features = jax.lax.stop_gradient(encoded)
        if rest.shape[0]:
            features = jnp.concatenate([features, latent.encode(latent_params, rest, nets)])
    rollout = latent.posterior_rollout(latent_params, features, batch.actions, key, nets)
    z = jnp.concatenate([rollout.z1, rollout.z2], axis=-1)
    now, nxt = sac.actor_inputs(features, batch.actions)
    return jax.lax.stop_gradient((z[:, -2], z[:, -1], now, nxt))


@struct.dataclass
class Gradients:
    """One update's gradients: of the latent model and, in a fused update, of the actor, the
    critics and log α (None in a latent-only update)."""

    latent: dict
    actor: dict | None = None
    critic: dict | None = None
    log_alpha: jax.Array | None = None


def gradients(state: TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig,
              nets: Networks) -> tuple[Gradients, dict]:
    """The fused update's losses and their gradients, all from the parameters before the step
    -> (Gradients, metrics). batch: `sampled_batch_size(cfg)` sequences (see `split_batch`)."""
    k_latent, k_rollout, k_critic, k_actor = jax.random.split(key, 4)
    latent_batch, sac_batch = split_batch(batch, cfg)
    params = state.params
    action_dim = batch.actions.shape[-1]
    chex.assert_equal(action_dim, nets.actor.action_dim)
    alpha = jnp.exp(state.log_alpha)

    latent_grads, (latent_metrics, latent_features) = jax.grad(latent.elbo_loss, has_aux=True)(
        params.latent, latent_batch, k_latent, cfg, nets)
    latent_metrics = {**latent_metrics, "latent_grad_norm": optax.global_norm(latent_grads)}

    # The default latent batch is the SAC batch's head: its frames are encoded once, for both.
    encoded = None if cfg.separate_latent_batch else latent_features
    z, z_next, now, nxt = sac_inputs(params.latent, sac_batch, k_rollout, nets, encoded)
    critic_grads, critic_metrics = jax.grad(sac.critic_loss, has_aux=True)(
        params.critic, state.target_critic, params.actor, alpha, z, z_next,
        sac_batch.actions[:, -1], sac_batch.rewards[:, -1], sac_batch.terminals[:, -1], nxt,
        k_critic, cfg.gamma, nets)
    actor_grads, (actor_metrics, log_pi) = jax.grad(sac.actor_loss, has_aux=True)(
        params.actor, params.critic, alpha, z, now, k_actor, nets)
    alpha_grad, alpha_metrics = jax.grad(sac.alpha_loss, has_aux=True)(
        state.log_alpha, log_pi, -float(action_dim))
    metrics = {**latent_metrics, **critic_metrics, **actor_metrics, **alpha_metrics,
               "alpha": alpha}
    return Gradients(latent_grads, actor_grads, critic_grads, alpha_grad), metrics


def latent_gradients(state: TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig,
                     nets: Networks) -> tuple[Gradients, dict]:
    """The latent model's loss and gradient on `batch_latent` sequences -> (Gradients with
    the latent model's only, metrics)."""
    grads, (metrics, _) = jax.grad(latent.elbo_loss, has_aux=True)(state.params.latent, batch,
                                                                   key, cfg, nets)
    return Gradients(grads), {**metrics, "latent_grad_norm": optax.global_norm(grads)}


def apply_gradients(state: TrainState, grads: Gradients, cfg: AgentConfig) -> TrainState:
    """The optimisers' steps for `grads`, and in a fused update the critic targets' -> the
    state after the update. Elementwise: `state` and `grads` may carry a leading axis of one
    (`slacjax.steps` applies them so, and XLA updates the donated state in place)."""
    opts = optimizers(cfg)
    latent_params, latent_opt = optimiser_step(opts["latent"], state.params.latent,
                                               grads.latent, state.opt_state.latent)
    state = state.replace(params=state.params.replace(latent=latent_params),
                          opt_state=state.opt_state.replace(latent=latent_opt),
                          step=state.step + 1)
    if grads.critic is None:
        return state
    critic, critic_opt = optimiser_step(opts["critic"], state.params.critic, grads.critic,
                                        state.opt_state.critic)
    actor, actor_opt = optimiser_step(opts["actor"], state.params.actor, grads.actor,
                                      state.opt_state.actor)
    log_alpha, alpha_opt = state.log_alpha, state.opt_state.alpha
    if cfg.learn_alpha:
        log_alpha, alpha_opt = optimiser_step(opts["alpha"], log_alpha, grads.log_alpha,
                                              alpha_opt)
    return state.replace(
        params=state.params.replace(actor=actor, critic=critic),
        target_critic=sac.polyak(state.target_critic, critic, cfg.tau),
        log_alpha=log_alpha,
        opt_state=state.opt_state.replace(actor=actor_opt, critic=critic_opt, alpha=alpha_opt))


def update(state: TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig, nets: Networks):
    """One fused SLAC update: latent model + critic + actor + α + targets -> (state, metrics).

    batch: `sampled_batch_size(cfg)` sequences (see `split_batch`).
    """
    grads, metrics = gradients(state, batch, key, cfg, nets)
    return apply_gradients(state, grads, cfg), metrics


def latent_update(state: TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig,
                  nets: Networks):
    """Latent-model-only update (pretraining) on `batch_latent` sequences -> (state, metrics)."""
    grads, metrics = latent_gradients(state, batch, key, cfg, nets)
    return apply_gradients(state, grads, cfg), metrics


def sample_gradients(state: TrainState, replay, cfg: AgentConfig, nets: Networks,
                     latent_only: bool, compute: Callable | None = None):
    """Splits the state's key, samples a batch from `replay` and computes the update's
    gradients -> (the state's next key, Gradients, metrics).

    `compute(state, batch, key) -> (Gradients, metrics)` defaults to `gradients` (or
    `latent_gradients`); `slacjax.steps` passes one that places the batch on a device mesh.
    """
    if compute is None:
        compute = functools.partial(latent_gradients if latent_only else gradients, cfg=cfg,
                                    nets=nets)
    key, k_sample, k_update = jax.random.split(state.key, 3)
    size = cfg.batch_latent if latent_only else sampled_batch_size(cfg)
    batch = replay_lib.sample(replay, k_sample, size, cfg.sequence_length)
    return (key, *compute(state, batch, k_update))
