"""What a trained agent's critic and reward head see, on sequences of its own replay.

    python -m benchmarks.learning_probe RUN_DIR [--batch 256] [--seed 0]

Restores the newest checkpoint of a single-seed run dir and, on a batch sampled from its
replay, prints one JSON object:
- the replay's rewarding transitions (count, share, mean reward);
- the critic: min(Q1, Q2) over a 9×9 grid of actions, its spread over actions per state
  (max − min, median) and |∂Q/∂a| at a = 0 (median), beside α — a critic flat in the action
  leaves the actor only the entropy term to follow, whatever α is;
- Q on the states whose last transition was rewarded against the others;
- the reward head's mean prediction on rewarded and unrewarded transitions against the true
  rewards — a head that predicts the average everywhere has a latent state that does not
  tell the rewarding states apart;
- the posterior reconstruction's mean absolute pixel error.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from slacjax import checkpoint, latent, networks, run_state, sac, update
from slacjax import replay as replay_lib
from slacjax.run_dir import load_config
from slacjax.steps import make_steps

GRID = 9  # actions per dimension of the probed grid (2-D action spaces)


def restore(run_dir: pathlib.Path, seed_axis: bool = False):
    """-> (config, agent config, action size, env step, state, replay) of the newest
    checkpoint; state and replay keep their seed axis (of size 1) only if `seed_axis`."""
    cfg = load_config(run_dir)
    if cfg.seeds != 1:
        raise SystemExit(f"{run_dir}: a multi-seed run dir; probe one seed's run dir")
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        latest = checkpoints.latest()
        if latest is None:
            raise SystemExit(f"{run_dir}: no checkpoint yet")
        action_dim = int(checkpoints.meta(latest)["action_dim"])
        steps = make_steps(cfg.agent_config(), action_dim, 1)
        _, state, replay, record = run_state.restore(checkpoints, steps, action_dim, cfg)
    finally:
        checkpoints.close()
    if not seed_axis:
        state, replay = jax.tree.map(lambda leaf: leaf[0], (state, replay))
    return cfg, cfg.agent_config(), action_dim, record.counters.env_steps, state, replay


def action_grid(action_dim: int) -> jax.Array:
    """[GRID^A, A] actions evenly spread over [-1, 1]^A (A ≤ 2), else [1 + 2A, A]: zero and
    each axis at ±1."""
    if action_dim <= 2:
        axes = jnp.meshgrid(*[jnp.linspace(-1.0, 1.0, GRID)] * action_dim)
        return jnp.stack(axes, -1).reshape(-1, action_dim)
    return jnp.concatenate([jnp.zeros((1, action_dim)), jnp.eye(action_dim),
                            -jnp.eye(action_dim)])


def probe(run_dir: pathlib.Path, batch_size: int, seed: int) -> dict:
    cfg, agent, action_dim, env_step, state, replay = restore(run_dir)
    nets = networks.build(agent, action_dim)
    params = state.params
    size = int(replay.size)
    stored = np.asarray(replay.rewards)[:size]
    k_sample, k_rollout, k_reward = jax.random.split(jax.random.PRNGKey(seed), 3)
    batch = replay_lib.sample(replay, k_sample, batch_size, agent.sequence_length)
    z, _, _, _ = update.sac_inputs(params.latent, batch, k_rollout, nets)

    def min_q(actions):
        return jnp.minimum(*sac.q_values(params.critic, z, actions, nets))

    grid = action_grid(action_dim)
    q = np.asarray(jax.vmap(lambda a: min_q(jnp.broadcast_to(a, (batch_size, action_dim))))(
        grid))  # [grid, B]
    dq = np.asarray(jax.grad(lambda a: jnp.sum(min_q(a)))(jnp.zeros((batch_size, action_dim))))
    rewarded = np.asarray(batch.rewards[:, -1]) > 0

    features = latent.encode(params.latent, batch.frames, nets)
    rollout = latent.posterior_rollout(params.latent, features, batch.actions, k_reward, nets)
    predicted = np.asarray(latent.reward_distribution(params.latent, rollout, batch.actions,
                                                      nets)[0])
    true = np.asarray(batch.rewards)
    images = np.asarray(latent.decode(params.latent, rollout.z1, rollout.z2, nets))

    def mean_where(values, mask):
        return float(values[mask].mean()) if mask.any() else None

    return dict(
        run_dir=str(run_dir), task=cfg.task, env_step=env_step, replay_size=size,
        rewarded_transitions=int((stored > 0).sum()),
        rewarded_share=float((stored > 0).mean()), replay_mean_reward=float(stored.mean()),
        alpha=float(jnp.exp(state.log_alpha)), q_mean=float(q.mean()),
        q_spread_over_actions_median=float(np.median(q.max(0) - q.min(0))),
        dq_da_abs_median=float(np.median(np.abs(dq))),
        q_on_rewarded_states=mean_where(q.mean(0), rewarded),
        q_on_other_states=mean_where(q.mean(0), ~rewarded),
        reward_head_on_rewarded=mean_where(predicted, true > 0),
        true_reward_on_rewarded=mean_where(true, true > 0),
        reward_head_on_unrewarded=mean_where(predicted, true == 0),
        reconstruction_abs_error=float(np.abs(images - np.asarray(batch.frames) / 255.0).mean()),
        batch=batch_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--batch", type=int, default=256, help="sequences sampled")
    parser.add_argument("--seed", type=int, default=0, help="sampling key")
    args = parser.parse_args()
    result = probe(args.run_dir, args.batch, args.seed)
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
