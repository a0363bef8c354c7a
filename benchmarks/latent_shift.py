"""A fresh latent model trained on one run dir's replay, then on another's: does it blow up?

    python -m benchmarks.latent_shift FIRST_RUN_DIR SECOND_RUN_DIR --lr 1e-3 \
        [--clip 0] [--first-updates 1500] [--second-updates 700] [--every 100] [--seed 0]

Latent-only updates (the run's batch_latent) with `lr_latent=--lr` and
`latent_grad_clip=--clip`, first on FIRST's replay (e.g. the random collection), then on
SECOND's (e.g. a run whose replay holds caught episodes): the offline form of the moment the
first rewarding episodes enter a run's replay. Every `--every` updates one line: the phase,
the updates so far and the mean of each latent metric (latent_grad_norm, kl, reward_mse, …).
Two replays of different capacities compile the pretraining program once each.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

import jax

from benchmarks import learning_probe
from slacjax.steps import make_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=pathlib.Path)
    parser.add_argument("second", type=pathlib.Path)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=0.0, help="latent_grad_clip (0: off)")
    parser.add_argument("--first-updates", type=int, default=1500)
    parser.add_argument("--second-updates", type=int, default=700)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.every < 1 or args.first_updates < 0 or args.second_updates < 0:
        parser.error("--every must be positive and the update counts non-negative")
    _, agent, action_dim, _, _, first = learning_probe.restore(args.first, seed_axis=True)
    *_, second = learning_probe.restore(args.second, seed_axis=True)
    agent = dataclasses.replace(agent, lr_latent=args.lr, latent_grad_clip=args.clip)
    steps = make_steps(agent, action_dim, 1)
    state = steps.init_state(jax.random.PRNGKey(args.seed)[None])
    start = time.perf_counter()
    for phase, replay, updates in (("first", first, args.first_updates),
                                   ("second", second, args.second_updates)):
        for done in range(args.every, updates + 1, args.every):
            state, metrics = steps.pretrain(state, replay, args.every)
            print(phase, done, " ".join(f"{name}={float(value[0]):.4g}"
                                        for name, value in sorted(metrics.items())),
                  f"t={time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
