"""Seeds and sweeps next to the paper, as one folder of Markdown and PNGs:

    python -m experiments.report PATH [PATH ...] [out=DIR]

PATH: a run dir (`metrics.jsonl` and `config.yaml`), a multi-seed run dir (`config.yaml`,
`seed<k>/metrics.jsonl`), or any folder holding such run dirs (searched recursively, e.g.
`runs/`), or a Hydra sweep dir (`multirun/<date>_<time>/`: its jobs' run dirs are found from
its `multirun.yaml`). Writes `report.md` and its figures to DIR (default: <first PATH>/report).

Per task: the evaluation returns as the mean over seeds with a 95% bootstrap interval, beside
SLAC's published curve (`slacjax.reference`); a table at 100k, 500k and 1M env steps. Across
tasks: interquartile mean, median, mean and optimality gap of returns / 1000 with stratified
bootstrap intervals, performance profiles, and return against wall-clock hours.
No JAX: a report takes seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import sys
import tempfile

import numpy as np
import yaml

from slacjax import durable, logger, plots, reference, stats, tasks

plt = plots.plt
MILESTONES = (100_000, 500_000, 1_000_000)
MAX_RETURN = 1000.0  # DMC's episode return is at most 1,000: scores are returns / 1000
POLICIES = ("stochastic", "greedy")
CONFIG_FILE = "config.yaml"
MULTIRUN_FILE = "multirun.yaml"


class ReportError(Exception):
    """Input the report cannot use: one line for the user."""


@dataclasses.dataclass
class Run:
    """One seed's evaluations: `evals` maps env step -> its eval row (the last one logged)."""

    path: pathlib.Path
    task: str
    action_repeat: int
    seed: int
    evals: dict[int, dict]
    torn: logger.TornLine | None = None  # a half-written last line of its metrics, skipped
    # Who trained it: config.yaml's `implementation` (the PyTorch port's driver,
    # benchmarks/peer_learning.py, writes one), else slacjax.
    implementation: str = "slacjax"

    def returns(self, policy: str, steps) -> np.ndarray:
        return np.array([self.evals[step][f"return_{policy}"] for step in steps], dtype=float)


# ------------------------------------------------------------------------------- finding runs

def _read_config(run_dir: pathlib.Path) -> dict:
    path = run_dir / CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_bytes())
    except OSError as error:
        raise ReportError(f"cannot read {path}: {durable.os_error_text(error)}") from None
    except yaml.YAMLError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "not YAML"
        raise ReportError(f"cannot read {path}: not YAML text ({reason})") from None
    if config is None:
        raise ReportError(f"{path} is empty")
    if not isinstance(config, dict):
        raise ReportError(f"{path} is not a YAML mapping of keys to values")
    if "task" not in config:
        raise ReportError(f"{path} names no task")
    return config


def _load_run(metrics_dir: pathlib.Path, config: dict, seed: int) -> Run:
    task = config["task"]
    try:
        repeat = config.get("action_repeat") or tasks.get_task(task).action_repeat
    except ValueError as error:
        raise ReportError(f"{metrics_dir}: {str(error).splitlines()[0]}") from None
    try:
        metrics = logger.read_metrics(metrics_dir)
    except logger.MetricsError as error:
        raise ReportError(str(error)) from None
    evals = {int(row["env_step"]): row for row in metrics.rows if row.get("phase") == "eval"}
    if not evals:
        raise ReportError(f"no evaluation in {metrics_dir / logger.METRICS_FILE}")
    return Run(metrics_dir, task, int(repeat), seed, dict(sorted(evals.items())), metrics.torn,
               str(config.get("implementation", "slacjax")))


def _runs_of(run_dir: pathlib.Path) -> list[Run]:
    """The seeds of a (single- or multi-seed) run dir."""
    config = _read_config(run_dir)
    if (run_dir / logger.METRICS_FILE).exists():
        return [_load_run(run_dir, config, int(config.get("seed", 0)))]
    seed_dirs = sorted(path.parent for path in run_dir.glob(f"seed*/{logger.METRICS_FILE}")
                       if path.parent.name[4:].isdigit())
    return [_load_run(path, config, int(path.name[4:])) for path in seed_dirs]


def _is_run_dir(path: pathlib.Path) -> bool:
    return (path / CONFIG_FILE).exists() and (
        (path / logger.METRICS_FILE).exists()
        or any(path.glob(f"seed*/{logger.METRICS_FILE}")))


def sweep_run_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
    """The run dirs of a Hydra sweep's jobs, from the config and overrides its multirun.yaml
    saved (run dirs are outside the sweep dir by default)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    import slacjax.config  # noqa: F401  (registers the run dir's `seed_dir` resolver)

    try:
        saved = OmegaConf.load(sweep_dir / MULTIRUN_FILE)
        hydra = saved.hydra
        params = hydra.sweeper.get("params") or {}
        overrides = [f"{key}={value}" for key, value in params.items()]
        parser = OverridesParser.create()
        jobs = BasicSweeper.split_arguments(
            parser.parse_overrides(overrides + list(hydra.overrides.task)), None)[0]
        base = OmegaConf.masked_copy(saved, [key for key in saved if key != "hydra"])
        run_dirs = []
        for job in jobs:
            config = base.copy()
            for override in parser.parse_overrides(job):
                # Config groups (preset=, sweep=, cluster=) are already composed in.
                if override.key_or_group.split(".")[0] in config:
                    OmegaConf.update(config, override.key_or_group, override.value(),
                                     merge=False)
            run_dirs.append(pathlib.Path(hydra.runtime.cwd) / str(config.run_dir))
    except Exception as error:  # a multirun.yaml of another layout: say which file
        raise ReportError(f"cannot read the jobs of {sweep_dir / MULTIRUN_FILE}: "
                          f"{str(error).strip().splitlines()[0]}") from None
    return run_dirs


EXPECTED = ("a run dir (config.yaml with metrics.jsonl or seed<k>/metrics.jsonl), a folder "
            "of run dirs or a sweep dir (multirun.yaml)")


def not_a_folder(path: pathlib.Path) -> str:
    """What is wrong with a PATH argument that is no folder, and what the report expects."""
    if not path.exists():
        return f"{path} does not exist; expected {EXPECTED}"
    folder = path.parent
    of_a_run = path.name in (logger.METRICS_FILE, CONFIG_FILE, MULTIRUN_FILE) and (
        _is_run_dir(folder) or (folder / MULTIRUN_FILE).exists())
    return f"{path} is a file; expected {EXPECTED}" + (
        f": its folder {folder} is one" if of_a_run else "")


def find_runs(paths: list[pathlib.Path]) -> list[Run]:
    """Every seed's run below `paths` (each run dir once)."""
    run_dirs = []
    for path in paths:
        if not path.is_dir():
            raise ReportError(not_a_folder(path))
        for folder, subfolders, _ in os.walk(path):
            folder = pathlib.Path(folder)
            subfolders.sort()
            if (folder / MULTIRUN_FILE).exists():
                run_dirs += [run_dir for run_dir in sweep_run_dirs(folder) if run_dir.is_dir()]
            if _is_run_dir(folder):
                run_dirs.append(folder)
                subfolders.clear()
    unique = list(dict.fromkeys(run_dir.resolve() for run_dir in run_dirs if _is_run_dir(run_dir)))
    runs = [run for run_dir in unique for run in _runs_of(run_dir)]
    if not runs:
        raise ReportError(f"no runs (config.yaml with metrics.jsonl or seed<k>/metrics.jsonl) "
                          f"found in {', '.join(map(str, paths))}")
    return runs


def by_implementation(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by who trained them, slacjax first: the report is about the first group;
    the others are drawn beside it (`side_by_side`)."""
    grouped = {}
    for run in runs:
        grouped.setdefault(run.implementation, []).append(run)
    return dict(sorted(grouped.items(), key=lambda item: (item[0] != "slacjax", item[0])))


def by_task(runs: list[Run]) -> dict[str, list[Run]]:
    """One implementation's runs grouped by task (sorted); one action repeat per task, or
    ReportError."""
    grouped = {}
    for run in sorted(runs, key=lambda run: (run.task, run.seed, str(run.path))):
        grouped.setdefault(run.task, []).append(run)
    for task, task_runs in grouped.items():
        repeats = sorted({run.action_repeat for run in task_runs})
        if len(repeats) > 1:
            raise ReportError(f"{task}: runs with action repeats {repeats} (e.g. "
                              f"{task_runs[0].path}); report them separately")
        if not common_steps(task_runs):
            raise ReportError(f"{task}: its seeds have no evaluated env step in common "
                              f"({', '.join(str(run.path) for run in task_runs)})")
    return grouped


def repeated_seeds(grouped: dict[str, list[Run]]) -> list[str]:
    """One line per seed value that several run dirs of a task hold (each is counted as a
    seed of its own: reruns of one seed, or two copies of one run)."""
    lines = []
    for task, task_runs in grouped.items():
        paths = {}
        for run in task_runs:
            paths.setdefault(run.seed, []).append(str(run.path))
        lines += [f"{task}: seed {seed} is in {len(held)} run dirs ({', '.join(held)}); each "
                  "is counted as a seed" for seed, held in paths.items() if len(held) > 1]
    return lines


# ---------------------------------------------------------------------------------- numbers

@dataclasses.dataclass
class Cell:
    """Mean over seeds with its 95% bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.1f} [{self.low:.1f}, {self.high:.1f}] (n={self.n})"


def cell(values) -> Cell:
    values = np.asarray(values, dtype=float)
    low, high = stats.bootstrap_mean_ci(values)
    return Cell(float(values.mean()), float(low), float(high), int(values.size))


def common_steps(task_runs: list[Run]) -> list[int]:
    """The env steps at which every seed of the task has an evaluation."""
    return sorted(set.intersection(*(set(run.evals) for run in task_runs)))


def curve(task_runs: list[Run], policy: str):
    """(steps [S], mean [S], low [S], high [S]) over the task's seeds, at the common steps."""
    steps = common_steps(task_runs)
    returns = np.stack([run.returns(policy, steps) for run in task_runs])
    low, high = stats.bootstrap_mean_ci(returns)
    return np.array(steps), returns.mean(axis=0), low, high


def at_step(task_runs: list[Run], step: int, policy: str = "stochastic") -> Cell | None:
    """The seeds that evaluated at exactly `step`: their mean and interval (None: no seed)."""
    values = [run.evals[step][f"return_{policy}"] for run in task_runs if step in run.evals]
    return cell(values) if values else None


def paper_at(task: str, step: int) -> str:
    found = reference.curve(task)
    returns = found.returns_at(step) if found is not None else None
    if returns is None:
        return "—"
    return str(cell(returns))


def aggregate_steps(grouped: dict[str, list[Run]]) -> list[int]:
    """The env steps the aggregates are taken at: the milestones every task reached, and the
    last env step all seeds of all tasks reached."""
    last = min(common_steps(task_runs)[-1] for task_runs in grouped.values())
    reached = [step for step in MILESTONES
               if all(any(step in run.evals for run in runs) for runs in grouped.values())]
    return sorted(set(reached) | {last})


def scores_at(grouped: dict[str, list[Run]], step: int) -> list[np.ndarray]:
    """Per task, the returns / 1000 of the seeds that evaluated at `step`."""
    return [np.array([run.evals[step]["return_stochastic"] for run in runs
                      if step in run.evals]) / MAX_RETURN for runs in grouped.values()]


def paper_scores_at(task_names, step: int) -> list[np.ndarray] | None:
    """The paper's trials' returns / 1000 at `step` per task, None unless every task has them."""
    found = [reference.curve(task) for task in task_names]
    returns = [curve.returns_at(step) if curve is not None else None for curve in found]
    if any(values is None for values in returns):
        return None
    return [values / MAX_RETURN for values in returns]


def aggregates(grouped: dict[str, list[Run]]) -> list[tuple[str, int, dict]]:
    """[(who, env step, {statistic: (value, low, high)})] for slacjax and, where it has every
    task at that step, the paper."""
    results = []
    for step in aggregate_steps(grouped):
        sets = [("slacjax", scores_at(grouped, step)),
                ("SLAC paper", paper_scores_at(grouped, step))]
        for who, scores in sets:
            if scores is not None:
                results.append((who, step, {name: stats.aggregate_ci(scores, function)
                                            for name, function in stats.AGGREGATES.items()}))
    return results


# ---------------------------------------------------------------------------------- figures

def _marker(points: int) -> dict:
    """Dots on sparse curves only: dense ones read better as lines."""
    return dict(marker="o", markersize=2.5) if points <= 25 else {}


def draw_task(axis, task: str, task_runs: list[Run]) -> bool:
    """One task's curves on `axis` -> whether the paper's curve was drawn."""
    steps, *_ = curve(task_runs, "stochastic")
    drawn = plots.draw_reference(axis, task, steps[-1], band="ci")
    for policy, style in zip(POLICIES, ("-", ":")):
        steps, mean, low, high = curve(task_runs, policy)
        axis.plot(steps, mean, style, zorder=3, **_marker(len(steps)),
                  label=f"{task_runs[0].implementation} {policy} (mean over seeds, 95% CI)")
        axis.fill_between(steps, low, high, alpha=0.2, zorder=2, linewidth=0)
    seeds = len(task_runs)
    axis.set_title(f"{task} (action repeat {task_runs[0].action_repeat}, {seeds} "
                   f"seed{'s' if seeds > 1 else ''})", fontsize=10)
    plots.env_step_axis(axis)
    axis.set_ylabel("episode return")
    axis.grid(alpha=0.3)
    return drawn


def curves_figure(grouped: dict[str, list[Run]], out: pathlib.Path) -> dict[str, bool]:
    """`curves.png` (all tasks) and `curve_<task>.png` each -> {task: paper curve drawn}."""
    columns = min(3, len(grouped))
    rows = -(-len(grouped) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows + 0.6),
                                dpi=110, squeeze=False)
    overlay = {}
    for axis, (task, task_runs) in zip(axes.flat, grouped.items()):
        overlay[task] = draw_task(axis, task, task_runs)
    for axis in list(axes.flat)[len(grouped):]:
        axis.set_visible(False)
    handles = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    legend_rows = -(-len(handles) // columns)
    height = 3.4 * rows + 0.25 * legend_rows + 0.2
    figure.set_size_inches(4.6 * columns, height)
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=columns,
                  fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, (0.25 * legend_rows + 0.1) / height, 1, 1))
    plots.save(figure, out / "curves.png")
    for task, task_runs in grouped.items():
        figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        draw_task(axis, task, task_runs)
        axis.legend(fontsize=8)
        figure.tight_layout()
        plots.save(figure, out / f"curve_{task}.png")
    return overlay


def aggregates_figure(results, out: pathlib.Path) -> None:
    """`aggregates.png`: each statistic's point estimate and interval, one row per (who, step)."""
    names = list(stats.AGGREGATES)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 0.5 * len(results) + 1.4),
                                dpi=110, sharey=True)
    labels = [f"{who} @ {plots.steps_label(step)}" for who, step, _ in results]
    colors = ["C0" if who == "slacjax" else "0.4" for who, _, _ in results]
    for axis, name in zip(axes, names):
        for row, (_, _, values) in enumerate(results):
            value, low, high = values[name]
            axis.barh(row, high - low, left=low, height=0.6, color=colors[row], alpha=0.35)
            axis.plot([value, value], [row - 0.3, row + 0.3], color=colors[row], linewidth=2)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("score (return / 1000)", fontsize=8)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    figure.tight_layout()
    plots.save(figure, out / "aggregates.png")


def profiles_figure(grouped: dict[str, list[Run]], steps: list[int], out: pathlib.Path) -> None:
    """`profiles.png`: the fraction of runs scoring above τ, one panel per env step."""
    thresholds = np.linspace(0, 1, 101)
    figure, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 3.4), dpi=110,
                                squeeze=False)
    for axis, step in zip(axes[0], steps):
        sets = [("slacjax", scores_at(grouped, step), "C0"),
                ("SLAC paper", paper_scores_at(grouped, step), "0.4")]
        for who, scores, color in sets:
            if scores is None:
                continue
            fraction, low, high = stats.profile_ci(scores, thresholds)
            axis.plot(thresholds, fraction, color=color, label=who)
            axis.fill_between(thresholds, low, high, color=color, alpha=0.2, linewidth=0)
        axis.set_title(f"at {plots.steps_label(step)} env steps", fontsize=10)
        axis.set_xlabel("score τ (return / 1000)")
        axis.set_ylabel("fraction of runs with score > τ")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    plots.save(figure, out / "profiles.png")


def wall_clock_figure(grouped: dict[str, list[Run]], out: pathlib.Path) -> dict[str, float]:
    """`wall_clock.png`: each task's mean stochastic return against the median wall-clock
    hours its seeds took -> {task: hours at its last common env step}."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    hours_at_last = {}
    for task, task_runs in grouped.items():
        steps, mean, low, high = curve(task_runs, "stochastic")
        seconds = [[run.evals[step].get("wall_time", np.nan) for step in steps]
                   for run in task_runs]
        hours = np.median(seconds, axis=0) / 3600
        axis.plot(hours, mean, label=task, **_marker(len(steps)))
        axis.fill_between(hours, low, high, alpha=0.15, linewidth=0)
        hours_at_last[task] = float(hours[-1])
    axis.set_xlabel("wall-clock hours (median over seeds)")
    axis.set_ylabel("episode return (stochastic, mean over seeds)")
    axis.set_title("return against wall-clock time")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    plots.save(figure, out / "wall_clock.png")
    return hours_at_last


def curves_table(grouped: dict[str, list[Run]], out: pathlib.Path) -> None:
    """`curves.csv`: the numbers of the curves (per task and env step all seeds reached: the
    mean and 95% interval of each policy over seeds, and the paper's at its logged steps)."""
    parts = ("mean", "ci_low", "ci_high")
    columns = ["task", "env_step", "n_seeds"]
    columns += [f"{policy}_{part}" for policy in POLICIES for part in parts]
    columns += ["paper_mean", "paper_ci_low", "paper_ci_high", "paper_n_seeds"]
    with durable.replacing(out / "curves.csv") as temporary, \
            temporary.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(columns)
        for task, task_runs in grouped.items():
            per_policy = [curve(task_runs, policy) for policy in POLICIES]
            paper = reference.curve(task)
            for index, step in enumerate(per_policy[0][0]):
                row = [task, int(step), len(task_runs)]
                row += [f"{values[index]:.2f}" for _, *parts in per_policy for values in parts]
                trials = paper.returns_at(step) if paper is not None else None
                if trials is None:
                    row += ["", "", "", ""]
                else:
                    found = cell(trials)
                    row += [f"{found.mean:.2f}", f"{found.low:.2f}", f"{found.high:.2f}",
                            found.n]
                writer.writerow(row)


def last_eval_minutes(task_runs: list[Run]) -> float:
    """The median over seeds of the wall-clock minutes to each seed's last evaluation."""
    return float(np.median([run.evals[max(run.evals)].get("wall_time", np.nan)
                            for run in task_runs]) / 60)


def side_by_side(implementations: dict[str, dict[str, list[Run]]],
                 out: pathlib.Path) -> list[str]:
    """Where another implementation (the PyTorch port) has runs of a task the report's own
    implementation has: `side_by_side_<task>.png` with both stochastic curves, and per common
    evaluation step each one's mean [95% CI] and the difference of their means with its 95%
    bootstrap interval (each side's seeds resampled on their own). -> report.md lines."""
    (name, grouped), *others = implementations.items()
    lines = []
    for other, other_grouped in others:
        for task in sorted(set(grouped) & set(other_grouped)):
            sides = ((name, grouped[task]), (other, other_grouped[task]))
            steps = sorted(set(common_steps(sides[0][1])) & set(common_steps(sides[1][1])))
            if not lines:
                lines += ["", "## Side by side", "",
                          "Stochastic returns, mean over each implementation's seeds [95% "
                          "bootstrap interval] (seeds), and the difference of the means with "
                          "its 95% bootstrap interval (each side's seeds resampled on their "
                          "own): an interval that holds 0 is a difference within seed noise."]
            figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=110)
            for color, (who, task_runs) in zip(("C0", "C1"), sides):
                curve_steps, mean, low, high = curve(task_runs, "stochastic")
                axis.errorbar(curve_steps, mean, yerr=[mean - low, high - mean], color=color,
                              capsize=4, zorder=3, **_marker(len(curve_steps)),
                              label=f"{who} ({len(task_runs)} seeds: mean, 95% CI, each seed)")
                axis.fill_between(curve_steps, low, high, color=color, alpha=0.15,
                                  linewidth=0, zorder=2)
                for run in task_runs:  # each seed, so a 5-seed mean shows its spread
                    axis.plot(curve_steps, run.returns("stochastic", curve_steps), ".",
                              color=color, alpha=0.45, zorder=2)
            axis.set_title(f"{task}: {name} and {other} on one protocol", fontsize=10)
            plots.env_step_axis(axis)
            axis.set_ylabel("episode return (stochastic)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
            figure.tight_layout()
            plots.save(figure, out / f"side_by_side_{task}.png")
            lines += ["", f"### {task}: {name} − {other}", "",
                      f"![{task}, side by side](side_by_side_{task}.png)", "",
                      f"| env steps | {name} | {other} | difference of the means |",
                      "| --- | --- | --- | --- |"]
            for step in steps:
                values = [[run.evals[step]["return_stochastic"] for run in task_runs]
                          for _, task_runs in sides]
                difference, low, high = stats.bootstrap_difference_ci(*values)
                lines.append(f"| {step:,} | {cell(values[0])} | {cell(values[1])} | "
                             f"{difference:+.1f} [{low:+.1f}, {high:+.1f}] |")
            lines += ["", "Wall-clock to the last evaluation, median over seeds: "
                      + ", ".join(f"{who} {last_eval_minutes(task_runs):.1f} min"
                                  for who, task_runs in sides) + "."]
    return lines


# --------------------------------------------------------------------------------- report.md

def markdown(paths, grouped, overlay, hours, results) -> str:
    curve_ref = reference.curve(reference.tasks()[0])
    source = f"`{curve_ref.source.split('/data/')[0]}` at commit `{curve_ref.commit[:7]}`"
    lines = ["# slacjax report", "",
             f"`python -m experiments.report {' '.join(map(str, paths))}`: "
             f"{sum(map(len, grouped.values()))} runs of {len(grouped)} tasks. Returns are "
             "evaluation returns (mean over each evaluation's episodes); intervals are 95% "
             "percentile bootstrap intervals of the mean over seeds (10,000 resamples), "
             "within the seeds' observed range. "
             f"SLAC paper: the authors' result files ({source}), per task the decoder variance "
             "their figures show, stochastic evaluation policy.", "",
             "| task | action repeat (paper's) | seeds (their values) | last env step all seeds "
             "reached "
             "| wall-clock hours to it (median) | paper curve |",
             "| --- | --- | --- | --- | --- | --- |"]
    for task, task_runs in grouped.items():
        found = reference.curve(task)
        paper_repeat = found.action_repeat if found is not None else "—"
        lines.append(f"| {task} | {task_runs[0].action_repeat} ({paper_repeat}) "
                     f"| {len(task_runs)} ({', '.join(str(run.seed) for run in task_runs)}) "
                     f"| {common_steps(task_runs)[-1]:,} | {hours[task]:.2f} "
                     f"| {'yes' if overlay[task] else 'none published'} |")
    lines += ["", "## Learning curves", "",
              "Mean over seeds with its 95% bootstrap interval, stochastic (solid) and greedy "
              "(dotted) policy, at the env steps every seed of the task reached; dashed grey: "
              "the SLAC paper's mean with its 95% bootstrap interval over its 10 seeds.", "",
              "![learning curves](curves.png)", "",
              "Each task alone: `curve_<task>.png`; the numbers: `curves.csv`.", "",
              "## Returns at 100k, 500k and 1M env steps", "",
              "Mean [95% CI] (seeds) over the seeds that evaluated at exactly that env step; "
              "— where none did.", "",
              "| task | env steps | slacjax stochastic | slacjax greedy | SLAC paper |",
              "| --- | --- | --- | --- | --- |"]
    for task, task_runs in grouped.items():
        for step in MILESTONES:
            ours = [at_step(task_runs, step, policy) for policy in POLICIES]
            lines.append(f"| {task} | {plots.steps_label(step)} | "
                         + " | ".join(str(value) if value else "—" for value in ours)
                         + f" | {paper_at(task, step)} |")
    lines += ["", "## Across tasks", "",
              "Scores are returns / 1000 (DMC's maximum). IQM: the mean of the middle 50% of "
              "all runs' scores; optimality gap: the mean shortfall from 1 (lower is better); "
              "median and mean over tasks of the per-task mean. Intervals: 95% stratified "
              "bootstrap (seeds resampled within each task, 2,000 resamples). The paper's "
              "statistics are over its trials on the same tasks, where it has all of them.", "",
              "| who | env steps | " + " | ".join(stats.AGGREGATES) + " |",
              "| --- | --- | " + " | ".join("---" for _ in stats.AGGREGATES) + " |"]
    for who, step, values in results:
        lines.append(f"| {who} | {plots.steps_label(step)} | " + " | ".join(
            f"{value:.3f} [{low:.3f}, {high:.3f}]" for value, low, high in values.values())
            + " |")
    lines += ["", "![aggregate statistics](aggregates.png)", "",
              "Performance profiles (fraction of runs above each score, 95% stratified "
              "bootstrap band):", "", "![performance profiles](profiles.png)", "",
              "## Return against wall-clock time", "", "![return against wall-clock hours]"
              "(wall_clock.png)", ""]
    return "\n".join(lines)


def report(paths: list[pathlib.Path], out: pathlib.Path, out_given: bool = True) -> pathlib.Path:
    """Writes `out/report.md` and its figures -> the report's path. Says which half-written
    last lines of metrics files it skipped (what a kill during a row write leaves).
    ReportError for bad input (`out_given`: `out` was an argument, else the default);
    WriteError where a file cannot be written (each file is written whole or not at all)."""
    runs = find_runs(paths)
    for run in runs:
        if run.torn is not None:
            print(f"skipped {run.torn}", file=sys.stderr)
    implementations = {name: by_task(group) for name, group in by_implementation(runs).items()}
    grouped = next(iter(implementations.values()))
    for line in repeated_seeds(grouped):
        print(line, file=sys.stderr)
    prepare_out(out, out_given)
    overlay = curves_figure(grouped, out)
    curves_table(grouped, out)
    results = aggregates(grouped)
    aggregates_figure(results, out)
    profiles_figure(grouped, aggregate_steps(grouped), out)
    hours = wall_clock_figure(grouped, out)
    path = out / "report.md"
    text = markdown(paths, grouped, overlay, hours, results)
    text += "\n".join(side_by_side(implementations, out))
    durable.write_bytes(path, text.encode())
    return path


def prepare_out(out: pathlib.Path, given: bool) -> None:
    """Makes the report's folder `out` and checks that files can be written there;
    ReportError naming the argument (`out=`, or the first PATH whose `report/` it defaults
    to) if not."""
    argument = f"out={out}" if given else f"the default out ({out}, in the first PATH)"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except FileExistsError:
        raise ReportError(f"{argument} is a file; out= takes a folder") from None
    except NotADirectoryError:
        file = next(parent for parent in [out, *out.parents] if parent.is_file())
        raise ReportError(f"{argument} is inside {file}, a file; out= takes a folder") \
            from None
    except OSError as error:
        raise ReportError(f"cannot write into {argument}: {durable.os_error_text(error)}; "
                          "pass out=DIR to write the report elsewhere") from None


USAGE = "usage: python -m experiments.report PATH [PATH ...] [out=DIR]"
ARGUMENTS = """  PATH     a run dir, a folder of run dirs (searched recursively) or a sweep dir
  out=DIR  where report.md, its figures and curves.csv go (default: <first PATH>/report)

Exit status: 0; 2 for bad input (the line names the argument); 1 for a write that failed."""


def main(arguments: list[str]) -> int:
    """The command -> its exit status: 0, 2 for bad input (each argument at fault named), 1
    for a write that failed (a full disk: one line, nothing half-written left)."""
    if any(argument in ("-h", "--help") for argument in arguments):
        print("\n\n".join([USAGE, __doc__.strip().split("\n\n", 2)[2], ARGUMENTS]))
        return 0
    outs = [argument[4:] for argument in arguments if argument.startswith("out=")]
    paths = [pathlib.Path(argument) for argument in arguments if not argument.startswith("out=")]
    if not paths or len(outs) > 1:
        print(f"{USAGE} (--help: what they are)", file=sys.stderr)
        return 2
    out = pathlib.Path(outs[0]) if outs else paths[0] / "report"
    try:
        path = report(paths, out, out_given=bool(outs))
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except durable.WriteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
