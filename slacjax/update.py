"""The training state and the fused update step (docs/algorithm.md §5), as pure functions.

`update` computes the latent, critic, actor and α losses from the parameters before the step,
then applies the four Adam optimisers and moves the critic targets, each over its parameters
as one vector (`ravel`). `slacjax.steps` jits them.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
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


def ravel(tree) -> jax.Array:
    """A pytree's leaves flattened and concatenated in leaf order -> one vector [P]."""
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def unravel(flat: jax.Array, like):
    """The inverse of `ravel`: [P] -> a pytree with the structure and shapes of `like`."""
    leaves, treedef = jax.tree.flatten(like)
    ends = np.cumsum([leaf.size for leaf in leaves])
    return jax.tree.unflatten(treedef, [flat[end - leaf.size:end].reshape(leaf.shape)
                                        for end, leaf in zip(ends, leaves)])


def apply_gradients(opt: optax.GradientTransformation, params, flat_grads: jax.Array,
                    opt_state) -> tuple[jax.Array, optax.OptState]:
    """One step of `opt` over all of `params` as one vector -> (new params [P], new state).

    flat_grads [P] is `ravel(grads)`. One transformation of P elements, not one per leaf;
    `opt_state` keeps the structure `opt.init(params)` gives it (moments shaped like params).
    """
    structure = jax.tree.structure(params)

    def like_params(node) -> bool:
        return jax.tree.structure(node) == structure

    flat_params = ravel(params)
    flat_state = jax.tree.map(lambda node: ravel(node) if like_params(node) else node, opt_state,
                              is_leaf=like_params)
    updates, flat_state = opt.update(flat_grads, flat_state, flat_params)
    new_state = jax.tree.map(lambda old, new: unravel(new, old) if like_params(old) else new,
                             opt_state, flat_state, is_leaf=like_params)
    return flat_params + updates, new_state


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


def update(state: TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig, nets: Networks):
    """One fused SLAC update: latent model + critic + actor + α + targets -> (state, metrics).

    batch: `sampled_batch_size(cfg)` sequences (see `split_batch`).
    """
    k_latent, k_rollout, k_critic, k_actor = jax.random.split(key, 4)
    latent_batch, sac_batch = split_batch(batch, cfg)
    params = state.params
    action_dim = batch.actions.shape[-1]
    chex.assert_equal(action_dim, nets.actor.action_dim)
    alpha = jnp.exp(state.log_alpha)

    latent_grads, (latent_metrics, latent_features) = jax.grad(latent.elbo_loss, has_aux=True)(
        params.latent, latent_batch, k_latent, cfg, nets)
    latent_grads = ravel(latent_grads)
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

    opts = optimizers(cfg)
    new_latent, latent_opt = apply_gradients(opts["latent"], params.latent, latent_grads,
                                             state.opt_state.latent)
    new_critic, critic_opt = apply_gradients(opts["critic"], params.critic, ravel(critic_grads),
                                             state.opt_state.critic)
    new_actor, actor_opt = apply_gradients(opts["actor"], params.actor, ravel(actor_grads),
                                           state.opt_state.actor)
    if cfg.learn_alpha:
        alpha_update, alpha_opt = opts["alpha"].update(alpha_grad, state.opt_state.alpha)
        log_alpha = state.log_alpha + alpha_update
    else:
        log_alpha, alpha_opt = state.log_alpha, state.opt_state.alpha

    new_state = state.replace(
        params=Params(latent=unravel(new_latent, params.latent),
                      actor=unravel(new_actor, params.actor),
                      critic=unravel(new_critic, params.critic)),
        target_critic=unravel(sac.polyak(ravel(state.target_critic), new_critic, cfg.tau),
                              state.target_critic),
        log_alpha=log_alpha,
        opt_state=OptStates(latent=latent_opt, actor=actor_opt, critic=critic_opt,
                            alpha=alpha_opt),
        step=state.step + 1,
    )
    metrics = {**latent_metrics, **critic_metrics, **actor_metrics, **alpha_metrics,
               "alpha": alpha}
    return new_state, metrics


def latent_update(state: TrainState, batch: Batch, key: jax.Array, cfg: AgentConfig,
                  nets: Networks):
    """Latent-model-only update (pretraining) on `batch_latent` sequences -> (state, metrics)."""
    grads, (metrics, _) = jax.grad(latent.elbo_loss, has_aux=True)(state.params.latent, batch,
                                                                   key, cfg, nets)
    grads = ravel(grads)
    metrics = {**metrics, "latent_grad_norm": optax.global_norm(grads)}
    new_latent, latent_opt = apply_gradients(optimizers(cfg)["latent"], state.params.latent,
                                             grads, state.opt_state.latent)
    return state.replace(params=state.params.replace(latent=unravel(new_latent,
                                                                    state.params.latent)),
                         opt_state=state.opt_state.replace(latent=latent_opt),
                         step=state.step + 1), metrics


def _sample_and_update(state: TrainState, replay, cfg: AgentConfig, latent_only: bool,
                       apply_update: Callable):
    key, k_sample, k_update = jax.random.split(state.key, 3)
    size = cfg.batch_latent if latent_only else sampled_batch_size(cfg)
    batch = replay_lib.sample(replay, k_sample, size, cfg.sequence_length)
    return apply_update(state.replace(key=key), batch, k_update)


def sample_and_update_steps(state: TrainState, replay, cfg: AgentConfig, nets: Networks,
                            num_steps: int, latent_only: bool,
                            apply_update: Callable | None = None):
    """`num_steps` times: split the state's key, sample a batch, update -> (state, mean metrics).

    `apply_update(state, batch, key) -> (state, metrics)` defaults to `update` (or
    `latent_update`); `slacjax.steps` passes one that places the batch on a device mesh.
    """
    if apply_update is None:
        apply_update = functools.partial(latent_update if latent_only else update, cfg=cfg,
                                         nets=nets)
    if num_steps == 1:
        # No loop for one step: XLA:CPU runs convolutions inside a while loop ~10× slower.
        return _sample_and_update(state, replay, cfg, latent_only, apply_update)

    def body(state, _):
        return _sample_and_update(state, replay, cfg, latent_only, apply_update)

    state, metrics = jax.lax.scan(body, state, None, length=num_steps)
    return state, jax.tree.map(jnp.mean, metrics)
