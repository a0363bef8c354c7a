"""The uniform random policy's returns per task: the floor a learning curve must clear.

    python -m benchmarks.random_baseline ball_in_cup_catch cartpole_swingup \
        [--episodes 200] [--window 10,30] [--seed 0]

Unrendered episodes (`slacjax.random_policy`). Per task one line: the episodes' mean, std,
median, 95th percentile and max, then for each window size W the 0.95 and 0.99 quantiles of
the mean of W episodes (what one evaluation of W episodes of a policy no better than random
reaches); the last line is all of it as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from slacjax import random_policy


def summary(task: str, episodes: int, windows: list[int], seed: int) -> dict:
    start = time.perf_counter()
    returns = random_policy.random_policy_returns(task, episodes, seed)
    row = dict(task=task, episodes=episodes, seed=seed, mean=float(returns.mean()),
               std=float(returns.std()), median=float(np.median(returns)),
               p95=float(np.percentile(returns, 95)), max=float(returns.max()),
               seconds=round(time.perf_counter() - start, 1))
    for window in windows:
        for quantile in (0.95, 0.99):
            row[f"mean_of_{window}_q{quantile:g}"] = random_policy.window_mean_quantile(
                returns, window, quantile, seed=seed)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tasks", nargs="+", help="slacjax task names")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--window", default="10,30",
                        help="comma-separated evaluation sizes (episodes per mean)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        windows = [int(part) for part in args.window.split(",")]
    except ValueError:
        parser.error(f"--window: not a comma-separated list of integers: {args.window!r}")
    if args.episodes < 2 or min(windows) < 1:
        parser.error("--episodes must be at least 2 and each --window at least 1")
    rows = []
    for task in args.tasks:
        rows.append(summary(task, args.episodes, windows, args.seed))
        print(" ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in rows[-1].items()), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
