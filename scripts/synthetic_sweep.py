"""Writes a synthetic sweep — run dirs laid out as `experiments.run` writes them, with made-up
returns from a formula, no training — to try `experiments.report` or show its layout:

    python scripts/synthetic_sweep.py OUT_DIR [--seeds 3] [--env-steps 500000]
    python -m experiments.report OUT_DIR

Per task and seed, the stochastic return at env step t is R (1 − exp(−t / τ)) plus noise
(R and τ per task, fixed below), the greedy one a little higher; wall-clock time grows
linearly with the agent steps. Nothing here is a measured result: each config.yaml names the
implementation `SYNTHETIC`, so the report's legends say so.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import yaml

# task: (action repeat, plateau R, time constant τ in env steps)
TASKS = {
    "cheetah_run": (4, 650, 150_000),
    "walker_walk": (2, 900, 80_000),
    "ball_in_cup_catch": (4, 950, 40_000),
    "finger_spin": (1, 850, 60_000),
    "cartpole_swingup": (4, 800, 90_000),
    "reacher_easy": (4, 800, 120_000),
}
# What experiments.report labels the curves with (config.yaml's `implementation`).
IMPLEMENTATION = "SYNTHETIC (a formula, no training)"
EVAL_EVERY = 10_000
SECONDS_PER_AGENT_STEP = 0.01


def write_seed(run_dir: pathlib.Path, task: str, seed: int, env_steps: int) -> None:
    repeat, plateau, tau = TASKS[task]
    rng = np.random.default_rng([seed, list(TASKS).index(task)])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        dict(task=task, seed=seed, seeds=1, action_repeat=None, env_steps=env_steps,
             implementation=IMPLEMENTATION)))
    rows = []
    for step in range(0, env_steps + 1, EVAL_EVERY):
        level = plateau * (1 - np.exp(-step / tau))
        stochastic = float(np.clip(level + rng.normal(0, 40), 0, 1000))
        greedy = float(np.clip(1.03 * level + rng.normal(0, 40), 0, 1000))
        rows.append(dict(phase="eval", env_step=step, return_stochastic=stochastic,
                         return_stochastic_std=20.0, return_greedy=greedy,
                         return_greedy_std=20.0,
                         wall_time=step / repeat * SECONDS_PER_AGENT_STEP))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--env-steps", type=int, default=500_000)
    args = parser.parse_args()
    for task in TASKS:
        for seed in range(args.seeds):
            write_seed(args.out / task / f"seed{seed}", task, seed, args.env_steps)
    print(f"wrote {len(TASKS) * args.seeds} synthetic run dirs to {args.out}")


if __name__ == "__main__":
    main()
