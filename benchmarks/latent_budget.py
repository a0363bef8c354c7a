"""How many latent-model updates, at which learning rate and batch size, make the model see
what a task's reward depends on, measured on the replay of a run dir.

    python -m benchmarks.latent_budget RUN_DIR [--lr 1e-4,1e-3] [--batch 8] [--updates 4000]
        [--every 500] [--out DIR]

RUN_DIR is a single-seed run dir with a checkpoint holding a replay, e.g. one made by
`experiments.run preset=cpu task=ball_in_cup_catch env_steps=10000 pretrain_updates=0
run_dir=…` (the preset's random collection, no updates). For each learning rate × batch size
pair, a fresh model (the same initial weights for every pair) is trained latent-only on that
replay; every `--every` updates, on one fixed sample of replay sequences (half of them
holding a reward), one line gives:
- the posterior reconstruction's mean absolute error on all pixels and on the *object* pixels,
  those that differ from the replay's per-pixel median frame by more than 0.1 in some channel
  (cup, ball and string in ball_in_cup_catch; the pole and cart in cartpole): the static
  background is learned in a few hundred updates and dominates the ELBO, while the objects
  are what the critic needs;
- the reward head's mean on the rewarded transitions against their true mean;
- the wall-clock of the updates alone.
With `--out`, a truth / posterior figure of rewarded sequences per check. The last line is one
JSON object with every check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import learning_probe
from slacjax import latent, networks, plots
from slacjax import replay as replay_lib
from slacjax.steps import make_steps

OBJECT_THRESHOLD = 0.1  # |frame − median frame| in [0, 1] units above which a pixel is an object
PROBE_SEQUENCES = 32  # fixed probe sequences: half with a reward, half without
CANDIDATES = 2048  # sequences drawn to find the rewarded ones


def probe_batch(replay, sequence_length: int, key: jax.Array) -> replay_lib.Batch:
    """PROBE_SEQUENCES fixed sequences of `replay` (no seed axis): the first half hold a
    rewarded transition where the replay has enough of them."""
    candidates = replay_lib.sample(replay, key, CANDIDATES, sequence_length)
    rewarded = np.asarray(candidates.rewards).max(1) > 0
    half = PROBE_SEQUENCES // 2
    chosen = np.concatenate([np.flatnonzero(rewarded)[:half], np.flatnonzero(~rewarded)])
    return jax.tree.map(lambda leaf: leaf[chosen[:PROBE_SEQUENCES]], candidates)


def object_mask(replay, frames: np.ndarray) -> np.ndarray:
    """bool [B, T+1, H, W]: pixels of `frames` (uint8) away from the replay's median frame."""
    stored = np.asarray(replay.frames)[:int(replay.size)]
    median = np.median(stored[::max(len(stored) // 1000, 1)], axis=0)
    return (np.abs(frames.astype(np.float32) - median) / 255.0 > OBJECT_THRESHOLD).any(-1)


def make_check(nets: networks.Networks, batch: replay_lib.Batch, objects: np.ndarray):
    """-> check(latent params, key) -> (metrics, truth/posterior rows of rewarded sequences)."""
    truth = np.asarray(batch.frames) / 255.0
    true_rewards = np.asarray(batch.rewards)

    @jax.jit
    def reconstruct(params, key):
        features = latent.encode(params, batch.frames, nets)
        rollout = latent.posterior_rollout(params, features, batch.actions, key, nets)
        images = jnp.clip(latent.decode(params, rollout.z1, rollout.z2, nets), 0, 1)
        rewards = latent.reward_distribution(params, rollout, batch.actions, nets)[0]
        return images, rewards

    def check(params, key):
        images, rewards = (np.asarray(out) for out in reconstruct(params, key))
        error = np.abs(images - truth).mean(-1)  # [B, T+1, H, W]
        rewarded = true_rewards > 0

        def mean_where(values, mask):
            return float(values[mask].mean()) if mask.any() else None

        metrics = dict(image_abs_error=float(error.mean()),
                       object_abs_error=mean_where(error, objects),
                       reward_head_on_rewarded=mean_where(rewards, rewarded),
                       true_reward_on_rewarded=mean_where(true_rewards, rewarded),
                       reward_head_on_unrewarded=mean_where(rewards, ~rewarded))
        return metrics, images

    return check


def train_and_check(cfg, action_dim: int, replay, lr: float, batch_size: int, updates: int,
                    every: int, seed: int, out: pathlib.Path | None) -> list[dict]:
    agent = dataclasses.replace(cfg.agent_config(), lr_latent=lr, batch_latent=batch_size,
                                batch_sac=max(batch_size, cfg.agent_config().batch_sac))
    steps = make_steps(agent, action_dim, 1)
    nets = networks.build(agent, action_dim)
    key_init, key_probe, key_check = jax.random.split(jax.random.PRNGKey(seed), 3)
    one_replay = jax.tree.map(lambda leaf: leaf[0], replay)
    batch = probe_batch(one_replay, agent.sequence_length, key_probe)
    check = make_check(nets, batch, object_mask(one_replay, np.asarray(batch.frames)))
    state = steps.init_state(key_init[None])
    results, seconds, done = [], 0.0, 0
    while done < updates:
        count = min(every, updates - done)
        if done == 0:  # compile outside the timed updates
            jax.block_until_ready(steps.pretrain(steps.copy(state), replay, count))
        start = time.perf_counter()
        state, metrics = steps.pretrain(state, replay, count)
        jax.block_until_ready(metrics)
        seconds += time.perf_counter() - start
        done += count
        params = jax.tree.map(lambda leaf: leaf[0], state.params.latent)
        measured, images = check(params, key_check)
        row = dict(lr=lr, batch=batch_size, updates=done, update_seconds=round(seconds, 1),
                   latent_loss=float(metrics["latent_loss"][0]), **measured)
        results.append(row)
        print(" ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                       for name, value in row.items()), flush=True)
        if out is not None:
            write_figure(batch, images, out / f"lr{lr:g}_batch{batch_size}_{done:06d}.png",
                         f"{cfg.task}, lr {lr:g}, batch {batch_size}, {done} updates")
    return results


def write_figure(batch, images: np.ndarray, path: pathlib.Path, title: str) -> None:
    """Truth over posterior for the first probe sequence (a rewarded one where there is)."""
    frames = np.asarray(batch.frames)[0]
    rows = plots.strip_rows(frames, images[0], images[0])[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.reconstruction_strip(rows, path, path.with_suffix(".gif"), title)


def parse_list(text: str, kind) -> list:
    try:
        return [kind(item) for item in text.split(",") if item]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--lr", type=lambda text: parse_list(text, float), default=[1e-4, 1e-3],
                        help="latent learning rates, comma-separated")
    parser.add_argument("--batch", type=lambda text: parse_list(text, int), default=[8],
                        help="latent batch sizes, comma-separated")
    parser.add_argument("--updates", type=int, default=4000, help="latent updates per pair")
    parser.add_argument("--every", type=int, default=500, help="updates between checks")
    parser.add_argument("--seed", type=int, default=0, help="initial weights, probe and noise")
    parser.add_argument("--out", type=pathlib.Path, help="folder for reconstruction figures")
    args = parser.parse_args()
    if args.updates < 1 or args.every < 1:
        parser.error("--updates and --every must be positive")
    cfg, _, action_dim, _, _, replay = learning_probe.restore(args.run_dir, seed_axis=True)
    results = [row for lr in args.lr for batch_size in args.batch
               for row in train_and_check(cfg, action_dim, replay, lr, batch_size, args.updates,
                                          args.every, args.seed, args.out)]
    print(json.dumps(dict(run_dir=str(args.run_dir), task=cfg.task, checks=results)))


if __name__ == "__main__":
    main()
