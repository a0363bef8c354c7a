"""Draws the evaluation returns of several implementations' seeds side by side, one point per
seed and evaluation, with each group's mean, and no paper curve (for protocols that are not
the paper's):

    python scripts/plot_seed_returns.py OUT.png --title "..." \\
        --group slacjax RUN_DIR RUN_DIR ... --group "PyTorch port" RUN_DIR ... \\
        [--line 119.7 "random policy, 0.99 quantile"] [--policy stochastic]

A RUN_DIR holds a `metrics.jsonl` (experiments.run's or benchmarks/peer_learning.py's); its
`phase: eval` rows give the env step and `return_<policy>`, the mean over that evaluation's
episodes. Where a run dir was resumed into another, pass the later one only.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def eval_returns(run_dir: pathlib.Path, policy: str) -> dict[int, float]:
    """{env step: mean return of that evaluation} from a run dir's metrics.jsonl."""
    returns = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if row.get("phase") == "eval":
            returns[int(row["env_step"])] = float(row[f"return_{policy}"])
    return returns


def group_points(run_dirs: list[pathlib.Path], policy: str) -> dict[int, list[float]]:
    """{env step: the seeds' returns there} over a group's run dirs."""
    points: dict[int, list[float]] = {}
    for run_dir in run_dirs:
        for step, value in eval_returns(run_dir, policy).items():
            points.setdefault(step, []).append(value)
    return points


def draw(groups: list[tuple[str, list[pathlib.Path]]], policy: str, title: str,
         lines: list[tuple[float, str]], out: pathlib.Path) -> None:
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    width = 1_000 * (len(groups) - 1)
    for index, (label, run_dirs) in enumerate(groups):
        points = group_points(run_dirs, policy)
        offset = index * 2_000 - width
        color = f"C{index}"
        for step, values in sorted(points.items()):
            axis.scatter([step + offset] * len(values), values, color=color, alpha=0.6, s=22)
            axis.hlines(sum(values) / len(values), step + offset - 700, step + offset + 700,
                        color=color, linewidth=2.5)
        axis.scatter([], [], color=color, label=f"{label}: {len(run_dirs)} seeds "
                                                f"(points), their mean (bar)")
    for value, text in lines:
        axis.axhline(value, color="0.4", linestyle="--", linewidth=1, label=text)
    steps = sorted({s for _, dirs in groups for s in group_points(dirs, policy)})
    axis.set_xticks(steps, [f"{s // 1000}k" for s in steps])
    axis.set_xlabel("env steps")
    axis.set_ylabel(f"{policy} return, mean over the evaluation's episodes", fontsize=9)
    axis.set_ylim(bottom=0)
    axis.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--title", required=True, help="the protocol, machine and date")
    parser.add_argument("--group", nargs="+", action="append", required=True,
                        metavar=("LABEL", "RUN_DIR"), help="a label and its run dirs")
    parser.add_argument("--line", nargs=2, action="append", default=[],
                        metavar=("VALUE", "LABEL"), help="a horizontal reference line")
    parser.add_argument("--policy", choices=("stochastic", "greedy"), default="stochastic")
    args = parser.parse_args(argv)
    groups = [(label, [pathlib.Path(d) for d in dirs]) for label, *dirs in args.group]
    for label, dirs in groups:
        if not dirs:
            parser.error(f"--group {label}: no run dirs")
    lines = [(float(value), text) for value, text in args.line]
    draw(groups, args.policy, args.title, lines, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
