"""Builds slacjax/data/slac_reference.csv, SLAC's published DMC learning curves, from the
authors' result files (repository alexlee-gk/slac, folder data/slac/):

    python scripts/make_reference.py DATA_SLAC_DIR --commit SHA [--out PATH]

Each `dm_control_<task>_slac.csv` there has one row per (decoder variance, trial, evaluation):
the stochastic policy's average return (`AverageReturnEvalPolicy`) every 10,000 env steps
(`OriginalEnvironmentSteps`). Per task this keeps the decoder variance whose rows before
500,000 env steps have the best mean return (the choice the authors' plotting notebook
makes), and writes per env step the trials' returns and their mean, population standard
deviation, min, max and a 95% bootstrap interval of the mean, with the source and commit.
"""

from __future__ import annotations

import argparse
import collections
import csv
import pathlib
import sys

import numpy as np

REPO_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

from slacjax import reference, stats  # noqa: E402

SELECTION_ENV_STEPS = 500_000
SOURCE_REPO = "alexlee-gk/slac"
PREFIX, SUFFIX = "dm_control_", "_slac.csv"
ROUNDED = ("mean", "std", "min", "max", "ci_low", "ci_high")


def read_source(path: pathlib.Path) -> list[dict]:
    """The rows of one authors' CSV as typed dicts."""
    with path.open() as file:
        return [dict(decoder_var=float(row["decoder_var"]),
                     action_repeat=int(float(row["action_repeat"])),
                     trial=int(row["trial_id"]),
                     env_step=int(row["OriginalEnvironmentSteps"]),
                     value=float(row["AverageReturnEvalPolicy"]))
                for row in csv.DictReader(file)]


def best_decoder_var(rows: list[dict]) -> float:
    """The decoder variance with the best mean return over its rows before 500k env steps."""
    early = collections.defaultdict(list)
    for row in rows:
        if row["env_step"] < SELECTION_ENV_STEPS:
            early[row["decoder_var"]].append(row["value"])
    return max(early, key=lambda var: np.mean(early[var]))


def task_rows(task: str, rows: list[dict], source: str, commit: str) -> list[dict]:
    """The reference rows of one task: one per env step of the chosen decoder variance."""
    chosen = best_decoder_var(rows)
    kept = [row for row in rows if row["decoder_var"] == chosen]
    (action_repeat,) = {row["action_repeat"] for row in kept}
    by_step = collections.defaultdict(dict)  # a few evaluations are missing from some trials
    for row in kept:
        by_step[row["env_step"]][row["trial"]] = row["value"]
    out = []
    for step in sorted(by_step):
        returns = np.array([value for _, value in sorted(by_step[step].items())])
        low, high = stats.bootstrap_mean_ci(returns)
        out.append(dict(task=task, action_repeat=action_repeat, decoder_var=chosen,
                        env_step=step, n_seeds=returns.size, mean=returns.mean(),
                        std=returns.std(), min=returns.min(), max=returns.max(),
                        ci_low=float(low), ci_high=float(high),
                        returns=" ".join(f"{value:.2f}" for value in returns),
                        source=source, commit=commit))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=pathlib.Path, help="the authors' data/slac/ folder")
    parser.add_argument("--commit", required=True, help="the commit of alexlee-gk/slac read")
    parser.add_argument("--out", type=pathlib.Path, default=reference.DATA_FILE)
    args = parser.parse_args()
    paths = sorted(args.data_dir.glob(f"{PREFIX}*{SUFFIX}"))
    if not paths:
        sys.exit(f"error: no {PREFIX}<task>{SUFFIX} files in {args.data_dir}")
    rows = []
    for path in paths:
        task = path.name[len(PREFIX):-len(SUFFIX)]
        source = f"{SOURCE_REPO}/data/slac/{path.name}"
        rows += task_rows(task, read_source(path), source, args.commit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=reference.COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.2f}" if key in ROUNDED else value
                             for key, value in row.items()})
    print(f"wrote {len(rows)} rows for {len(paths)} tasks to {args.out}")


if __name__ == "__main__":
    main()
