"""Does slacjax learn? `python -m experiments.learning_check [key=value ...]`

    python -m experiments.learning_check                        # preset=check, seed 0
    python -m experiments.learning_check seed=1 run_dir=/tmp/c  # any experiments.run override
    python -m experiments.learning_check --random-episodes 200 --quantile 0.99

Trains `preset=check` (experiments/conf/preset/check.yaml; README "Learning on a CPU" has the
measurements behind it) with `experiments.run` in a child process, so the overrides, the run
dir, its progress output and resuming are that command's: rerunning resumes, and a finished
run dir is only read. Then it compares the last evaluation's stochastic returns (the mean
over the seeds' `eval_episodes` each) with the uniform random policy's on the same task,
measured here on unrendered episodes (`slacjax.random_policy`). The threshold is the
`--quantile` of the mean of as many random episodes as that evaluation holds, so a policy
no better than random clears it in 1 − quantile of checks.

Exit status: 0 learned, 1 did not (or training failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import numpy as np

from experiments import run as launcher
from slacjax import logger, random_policy
from slacjax.run_dir import seed_directory

PRESET = "check"


def last_evaluation(run_dir: pathlib.Path, cfg) -> tuple[int, np.ndarray]:
    """-> (env step, [seeds · eval_episodes] stochastic returns) of the last evaluation that
    every seed logged."""
    per_seed = []
    for index in range(cfg.seeds):
        rows = [row for row in logger.read_rows(seed_directory(run_dir, cfg, index))
                if row.get("phase") == "eval" and row.get("returns_stochastic")]
        if not rows:
            raise SystemExit(f"error: {run_dir}: seed {cfg.seed + index} logged no evaluation")
        per_seed.append({row["env_step"]: row["returns_stochastic"] for row in rows})
    step = max(set.intersection(*(set(seed) for seed in per_seed)), default=None)
    if step is None:
        raise SystemExit(f"error: {run_dir}: the seeds share no evaluation step")
    return step, np.concatenate([np.asarray(seed[step], float) for seed in per_seed])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Other arguments are experiments.run overrides (key=value).")
    parser.add_argument("--random-episodes", type=int, default=200,
                        help="random-policy episodes the threshold is measured from")
    parser.add_argument("--quantile", type=float, default=0.99,
                        help="of the random policy's evaluation mean; the check must beat it")
    args, overrides = parser.parse_known_args(argv)
    bad = [item for item in overrides if item.startswith("-") or "=" not in item]
    if bad:
        parser.error(f"not a key=value override: {' '.join(bad)}")
    if not 0.0 < args.quantile < 1.0 or args.random_episodes < 2:
        parser.error("--quantile must be in (0, 1) and --random-episodes at least 2")
    overrides = [f"preset={PRESET}", *overrides]
    try:
        cfg = launcher.experiment_config(overrides)
    except launcher.USER_ERRORS as error:
        print(f"error: {launcher.error_line(error)}", file=sys.stderr)
        return 2

    trained = subprocess.run([sys.executable, "-m", "experiments.run", *overrides])
    if trained.returncode:
        print(f"learning check: training exited with {trained.returncode}", file=sys.stderr)
        return 1
    run_dir = pathlib.Path(cfg.run_dir)
    step, returns = last_evaluation(run_dir, cfg)

    print(f"learning check: {args.random_episodes} random-policy episodes of {cfg.task} "
          "(unrendered) ...", flush=True)
    baseline = random_policy.random_policy_returns(cfg.task, args.random_episodes, cfg.seed)
    threshold = random_policy.window_mean_quantile(baseline, returns.size, args.quantile,
                                                   seed=cfg.seed)
    learned = returns.mean() > threshold
    print(f"learning check, {cfg.task}, {run_dir}: stochastic return at {step} env steps "
          f"{returns.mean():.1f} (min {returns.min():.0f}, max {returns.max():.0f}, "
          f"{returns.size} episodes); random policy {baseline.mean():.1f}, its "
          f"{args.quantile:g} quantile over {returns.size} episodes {threshold:.1f}: "
          + ("LEARNED" if learned else "NOT LEARNED"), flush=True)
    return 0 if learned else 1


if __name__ == "__main__":
    sys.exit(main())
