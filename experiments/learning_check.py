"""Does slacjax learn? `python -m experiments.learning_check [key=value ...]`

    python -m experiments.learning_check                        # preset=check, seed 0
    python -m experiments.learning_check seed=1 run_dir=/tmp/c  # any experiments.run override
    python -m experiments.learning_check --random-episodes 200 --quantile 0.99
    python -m experiments.learning_check --any-of 2             # seeds 0, 1: passes if one learns

Trains `preset=check` (experiments/conf/preset/check.yaml; docs/learning-on-cpu.md has the
measurements behind it) with `experiments.run` in a child process, so the overrides, the run
dir, its progress output and resuming are that command's: rerunning resumes, and a finished
run dir is only read. Then it compares the last evaluation's stochastic returns (the mean
over the seeds' `eval_episodes` each) with the uniform random policy's on the same task,
measured here on unrendered episodes (`slacjax.random_policy`). The threshold is the
`--quantile` of the mean of as many random episodes as that evaluation holds, so a policy
no better than random clears it in 1 − quantile of checks. The verdict line says by how much
the mean cleared the threshold (the margin) and how long the check took, launch to verdict;
the same verdict is written to the run dir as `learning_check.json`.

`--any-of N` trains seeds seed, seed+1, … one after another, each in its own run dir, until
one learns (at most N): a rule for CI, where a healthy seed that fails with probability p
fails N in a row with probability p^N. A training that fails ends the check at once.

Exit status: 0 learned, 1 did not (or training failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from experiments import run as launcher
from slacjax import logger, random_policy
from slacjax.run_dir import seed_directory

PRESET = "check"
VERDICT_FILE = "learning_check.json"  # the verdict, beside the rows it was read from


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


def check_once(overrides: list[str], cfg, args) -> dict:
    """Trains one run dir to the end of its protocol (or reads a finished one) and compares its
    last evaluation with the random policy's quantile. -> the verdict as a dict."""
    started = time.perf_counter()
    trained = subprocess.run([sys.executable, "-m", "experiments.run", *overrides])
    if trained.returncode:
        return dict(seed=cfg.seed, status=2 if trained.returncode == 2 else 1,
                    error=f"training exited with {trained.returncode}")
    run_dir = pathlib.Path(cfg.run_dir)
    step, returns = last_evaluation(run_dir, cfg)

    print(f"learning check: {args.random_episodes} random-policy episodes of {cfg.task} "
          "(unrendered) ...", flush=True)
    baseline = random_policy.random_policy_returns(cfg.task, args.random_episodes, cfg.seed)
    threshold = random_policy.window_mean_quantile(baseline, returns.size, args.quantile,
                                                   seed=cfg.seed)
    mean = float(returns.mean())
    learned = mean > threshold
    verdict = dict(task=cfg.task, seed=cfg.seed, seeds=cfg.seeds, run_dir=str(run_dir),
                   env_step=int(step), mean_return=round(mean, 2),
                   episodes=int(returns.size), random_mean=round(float(baseline.mean()), 2),
                   quantile=args.quantile, threshold=round(threshold, 2),
                   margin=round(mean - threshold, 2), learned=bool(learned),
                   seconds=round(time.perf_counter() - started, 1),
                   status=0 if learned else 1)
    print(f"learning check, {cfg.task}, {run_dir}: stochastic return at {step} env steps "
          f"{mean:.1f} (min {returns.min():.0f}, max {returns.max():.0f}, "
          f"{returns.size} episodes); random policy {baseline.mean():.1f}, its "
          f"{args.quantile:g} quantile over {returns.size} episodes {threshold:.1f}; "
          f"margin {mean - threshold:+.1f} in {verdict['seconds'] / 60:.1f} min: "
          + ("LEARNED" if learned else "NOT LEARNED"), flush=True)
    (run_dir / VERDICT_FILE).write_text(json.dumps(verdict) + "\n")
    return verdict


def attempt_overrides(overrides: list[str], cfg, attempt: int, attempts: int) -> list[str]:
    """Attempt `attempt` of `attempts`: the next seed, in its own run dir (under an explicit
    run_dir=, a `seed<k>` folder of it)."""
    if attempts == 1:
        return overrides
    seed = cfg.seed + attempt
    extra = [f"seed={seed}"]
    if any(item.startswith("run_dir=") for item in overrides):
        extra.append(f"run_dir={pathlib.Path(cfg.run_dir) / f'seed{seed}'}")
    return [*overrides, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Other arguments are experiments.run overrides (key=value).")
    parser.add_argument("--random-episodes", type=int, default=200,
                        help="random-policy episodes the threshold is measured from")
    parser.add_argument("--quantile", type=float, default=0.99,
                        help="of the random policy's evaluation mean; the check must beat it")
    parser.add_argument("--any-of", type=int, default=1, metavar="N",
                        help="train seeds seed, seed+1, ... one after another until one learns, "
                             "at most N; passes if any does (N=2 for CI)")
    args, overrides = parser.parse_known_args(argv)
    bad = [item for item in overrides if item.startswith("-") or "=" not in item]
    if bad:
        parser.error(f"not a key=value override: {' '.join(bad)}")
    if not 0.0 < args.quantile < 1.0:
        parser.error(f"--quantile must be in (0, 1), got {args.quantile:g}")
    if args.random_episodes < 2:
        parser.error(f"--random-episodes must be at least 2, got {args.random_episodes}")
    if args.any_of < 1:
        parser.error(f"--any-of must be at least 1, got {args.any_of}")
    overrides = [f"preset={PRESET}", *overrides]
    try:
        cfg = launcher.experiment_config(overrides)
        if args.any_of > 1 and cfg.seeds > 1:
            raise ValueError("--any-of trains one seed per run: leave seeds at 1")
        if pathlib.Path(cfg.run_dir).exists() and not pathlib.Path(cfg.run_dir).is_dir():
            raise ValueError(f"run_dir {cfg.run_dir} is a file, not a directory")
    except launcher.USER_ERRORS as error:
        print(f"error: {launcher.error_line(error)}", file=sys.stderr)
        return 2

    verdicts = []
    for attempt in range(args.any_of):
        attempt_args = attempt_overrides(overrides, cfg, attempt, args.any_of)
        verdict = check_once(attempt_args, launcher.experiment_config(attempt_args), args)
        verdicts.append(verdict)
        if "error" in verdict:  # a failed training is a defect, not an unlucky seed: stop
            print(f"learning check: seed {verdict['seed']}: {verdict['error']}", file=sys.stderr)
            break
        if verdict["learned"]:
            break
    if args.any_of > 1:
        learned = [v["seed"] for v in verdicts if v["status"] == 0]
        print(f"learning check: {len(learned)} of {len(verdicts)} seeds tried learned "
              f"(at most {args.any_of}): " + ("PASSED" if learned else "FAILED"), flush=True)
    return verdicts[-1]["status"]


if __name__ == "__main__":
    sys.exit(main())
