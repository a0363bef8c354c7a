"""The jitted programs of a run, built once by `make_steps` for a config, an action size, a seed
count, an optional device mesh and a seed-convolution strategy.

Every argument and result carries a leading seed axis [N, ...], also for N = 1, whose programs
squeeze it and run one agent's code (no vmap); N > 1 vmaps it. Programs that take the training
state or the replay donate it, so the hot path stays on the device.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from slacjax import convolutions, latent, networks, parallel, policy, update
from slacjax import replay as replay_lib
from slacjax.config import DEFAULT_SEED_CONV, AgentConfig


@dataclasses.dataclass(frozen=True)
class Steps:
    """The run's jitted functions (N = num_seeds, M = acting windows, A = action dims).

    init_state(keys [N, 2]) -> TrainState [N, ...]
    init_replay(capacity) -> Replay [N, ...]
    add(replay, frames u8 [N,H,W,3], actions [N,A], rewards [N], terminals [N], firsts bool [N],
        active bool [N]) -> replay; seeds with active False unchanged; replay donated
    pretrain / train(state, replay, num_steps) -> (state, metrics {name: [N]}); num_steps static,
        metrics averaged over the steps, state donated
    accumulate(total, metrics, weight) -> total + metrics · weight; total donated
    copy(tree) -> the same arrays in new buffers (one program, not one dispatch per leaf)
    reset_history(history or None, first_frames u8 [M,H,W,3], starting bool [M]) -> History [M]
    push_history(history, actions [M,A], frames u8 [M,H,W,3]) -> History [M]
    act(params [N, ...], agents int32 [M], history, keys [M, 2], step, greedy) -> actions [M, A]:
        window m acts with agent agents[m] and key fold_in(keys[m], step)
    reconstruct(latent_params [N, ...], replay, keys [N, 2]) -> (truth, posterior, prior)
        [N, T+1, H, W, 3]: one replay sequence per seed, posterior and prior from frame 0
    """

    # How a pretraining / training program of K updates per call (scanned for K > 1) computes
    # convolutions: the backend formulation (convolutions.py) or, for seeds batched with a
    # strategy of their own, "seed_conv=<strategy>".
    conv_formulation: Callable[[int], str]
    init_state: Callable
    init_replay: Callable
    add: Callable
    pretrain: Callable
    train: Callable
    accumulate: Callable
    copy: Callable
    reset_history: Callable
    push_history: Callable
    act: Callable
    reconstruct: Callable


def make_steps(cfg: AgentConfig, action_dim: int, num_seeds: int = 1, mesh: Mesh | None = None,
               seed_conv: str = DEFAULT_SEED_CONV, formulation: str | None = None) -> Steps:
    """The programs for N = `num_seeds` agents; a `mesh` (N = 1 only) splits each sampled batch
    over its devices. `formulation` (`convolutions.FORMULATIONS`) overrides the backend's
    choice for every program (to measure one). Built once per distinct arguments (cached)."""
    networks.check_seed_conv(seed_conv)
    if formulation is not None and formulation not in convolutions.FORMULATIONS:
        raise ValueError(f"formulation must be one of {', '.join(convolutions.FORMULATIONS)}, "
                         f"got {formulation!r}")
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be positive, got {num_seeds}")
    if mesh is not None:
        if num_seeds != 1:
            raise ValueError(f"a device mesh splits one agent's batches: num_seeds must be 1, "
                             f"got {num_seeds}")
        parallel.check_divisible(cfg, mesh)
        parallel.check_divisible(cfg, mesh, latent_only=True)
    if num_seeds == 1:
        seed_conv = networks.PLAIN_CONV  # one agent's convolutions are never batched
    return _build(cfg, action_dim, num_seeds, mesh, seed_conv, formulation)


def _squeeze(tree):
    return jax.tree.map(lambda leaf: leaf.reshape(leaf.shape[1:]), tree)


def _expand(tree):
    return jax.tree.map(lambda leaf: leaf.reshape((1,) + leaf.shape), tree)


def _seedwise(fun: Callable, num_seeds: int) -> Callable:
    """`fun` over a leading seed axis of every argument and result: vmapped for N > 1; for one
    seed the axis is squeezed and restored, so the program is the single-agent one."""
    if num_seeds > 1:
        return jax.vmap(fun)
    return lambda *args: _expand(fun(*_squeeze(args)))


@functools.lru_cache(maxsize=None)
def _build(cfg: AgentConfig, action_dim: int, num_seeds: int, mesh: Mesh | None,
           seed_conv: str, formulation: str | None) -> Steps:
    # Fresh states and replays are committed where a checkpoint restores them: a fresh state
    # beside a restored replay then compiles each program once, not again when the first
    # step's committed output comes back.
    placed = {"out_shardings": (parallel.local_device_sharding() if mesh is None
                                else parallel.replicated(mesh))}
    backend = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    nets, scanned_nets = (
        networks.build(cfg, action_dim, seed_conv,
                       formulation or convolutions.formulation_for(backend, scanned=scanned))
        for scanned in (False, True))
    # The programs that run the networks, compiled with the backend's convolution options.
    jit_networks = functools.partial(
        jax.jit, compiler_options=convolutions.compiler_options_for(backend))

    def init_replay(capacity):
        empty = replay_lib.init(capacity, action_dim, cfg.image_size)
        return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (num_seeds,) + leaf.shape), empty)

    def nets_for(num_steps: int) -> networks.Networks:
        return nets if num_steps == 1 else scanned_nets  # K > 1 runs in a lax.scan

    def updates(latent_only: bool):
        def program(state, replay, num_steps):
            step_nets = nets_for(num_steps)
            compute = None if mesh is None else functools.partial(
                parallel.gradients_on_mesh, cfg=cfg, nets=step_nets, mesh=mesh,
                latent_only=latent_only)
            sample_gradients = _seedwise(functools.partial(
                update.sample_gradients, cfg=cfg, nets=step_nets, latent_only=latent_only,
                compute=compute), num_seeds)
            # One seed: the optimisers step the state with its seed axis. A fusion that writes
            # a donated leaf in place must read it without the squeeze's reshape, or XLA
            # copies the leaf at every call instead.
            apply = functools.partial(update.apply_gradients, cfg=cfg)
            apply = apply if num_seeds == 1 else jax.vmap(apply)

            def one_update(state, _=None):
                key, grads, metrics = sample_gradients(state, replay)
                state = apply(state.replace(key=key), grads)
                if mesh is not None:  # one layout from call to call for the donated state
                    state = jax.lax.with_sharding_constraint(state, parallel.replicated(mesh))
                return state, metrics

            if num_steps == 1:
                # No loop for one step: XLA:CPU runs convolutions inside a while loop ~10×
                # slower.
                return one_update(state)
            state, metrics = jax.lax.scan(one_update, state, None, length=num_steps)
            return state, jax.tree.map(lambda metric: jnp.mean(metric, axis=0), metrics)

        return jit_networks(program, static_argnames="num_steps", donate_argnums=0)

    def accumulate(total, metrics, weight):
        return jax.tree.map(lambda t, m: t + m * weight, total, metrics)

    def reset_history(history, first_frames, starting):
        fresh = jax.vmap(lambda frame: policy.history_reset(frame, action_dim,
                                                            cfg.sequence_length))(first_frames)
        if history is None:
            return fresh
        return jax.tree.map(
            lambda new, old: jnp.where(starting.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            fresh, history)

    def act(params, agents, history, keys, step, greedy):
        window_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
        one = functools.partial(policy.act, nets=nets)
        if num_seeds == 1:  # one agent's weights for every window: unbatched convolutions
            return jax.vmap(one, in_axes=(None, 0, 0, None))(_squeeze(params), history,
                                                             window_keys, greedy)
        chosen = jax.tree.map(lambda leaf: leaf[agents], params)
        return jax.vmap(one, in_axes=(0, 0, 0, None))(chosen, history, window_keys, greedy)

    def reconstruct_one(latent_params, replay, key):
        batch = replay_lib.sample(replay, key, 1, cfg.sequence_length)
        posterior, prior = latent.reconstruct_and_imagine(latent_params, batch, key, nets)
        return batch.frames[0], posterior[0], prior[0]

    return Steps(
        conv_formulation=lambda num_steps: (
            nets_for(num_steps).encoder.formulation if seed_conv == networks.PLAIN_CONV
            else f"seed_conv={seed_conv}"),
        init_state=jax.jit(_seedwise(functools.partial(update.init_state, cfg, action_dim),
                                     num_seeds), **placed),
        init_replay=jax.jit(init_replay, static_argnums=0, **placed),
        add=jax.jit(_seedwise(replay_lib.add_if, num_seeds), donate_argnums=0, **placed),
        pretrain=updates(latent_only=True),
        train=updates(latent_only=False),
        accumulate=jax.jit(accumulate, donate_argnums=0),
        copy=jax.jit(functools.partial(jax.tree.map, jnp.copy)),
        reset_history=jax.jit(reset_history),
        push_history=jax.jit(jax.vmap(policy.history_push)),
        act=jit_networks(act),
        reconstruct=jit_networks(_seedwise(reconstruct_one, num_seeds)),
    )
