"""The learning check's verdicts over many seeds: the pass rate, its interval, the times.

    python -m benchmarks.check_verdicts RUN_DIR [RUN_DIR ...] [--any-of 2]

Reads each run dir's `learning_check.json` (written by `experiments.learning_check`) and prints
one Markdown row per seed (return, threshold, margin, verdict, minutes launch to verdict),
then the share of seeds that learned with its exact (Clopper-Pearson) 95% interval, the
median time, and what a rule of `--any-of N` seeds would fail on a healthy main: (1 − p)^N at
the measured rate and at the interval's low end. The last line is all of it as JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from scipy import stats as scipy_stats


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a success probability from `successes` of `trials`."""
    tail = (1.0 - confidence) / 2.0
    low = scipy_stats.beta.ppf(tail, successes, trials - successes + 1) if successes else 0.0
    high = (scipy_stats.beta.ppf(1.0 - tail, successes + 1, trials - successes)
            if successes < trials else 1.0)
    return float(low), float(high)


def read_verdicts(run_dirs: list[pathlib.Path]) -> list[dict]:
    verdicts = []
    for run_dir in run_dirs:
        path = run_dir / "learning_check.json"
        if not path.is_file():
            raise SystemExit(f"error: {path}: no verdict (run experiments.learning_check on it)")
        verdicts.append(json.loads(path.read_text()))
    return sorted(verdicts, key=lambda verdict: verdict["seed"])


def summary(verdicts: list[dict], any_of: int) -> dict:
    learned = sum(verdict["learned"] for verdict in verdicts)
    low, high = clopper_pearson(learned, len(verdicts))
    rate = learned / len(verdicts)
    return dict(seeds=len(verdicts), learned=learned, rate=rate, rate_ci95=[low, high],
                median_minutes=float(np.median([v["seconds"] for v in verdicts]) / 60),
                any_of=any_of, rule_fails=(1 - rate) ** any_of,
                rule_fails_at_ci_low=(1 - low) ** any_of)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path)
    parser.add_argument("--any-of", type=int, default=2,
                        help="the CI rule's number of seeds (passes if any learns)")
    args = parser.parse_args(argv)
    verdicts = read_verdicts(args.run_dirs)
    print("| seed | stochastic return | threshold | margin | verdict | minutes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for v in verdicts:
        print(f"| {v['seed']} | {v['mean_return']:.1f} | {v['threshold']:.1f} | "
              f"{v['margin']:+.1f} | {'learned' if v['learned'] else 'NOT learned'} | "
              f"{v['seconds'] / 60:.1f} |")
    row = summary(verdicts, args.any_of)
    print(f"\n{row['learned']} of {row['seeds']} seeds learned (95% interval "
          f"{row['rate_ci95'][0]:.2f}–{row['rate_ci95'][1]:.2f}); median "
          f"{row['median_minutes']:.1f} min; any of {args.any_of} fails a healthy main "
          f"{100 * row['rule_fails']:.2f}% of the time at the measured rate, "
          f"{100 * row['rule_fails_at_ci_low']:.1f}% at the interval's low end")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
