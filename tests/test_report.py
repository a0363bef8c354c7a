"""experiments.report on synthetic run dirs with known returns: numbers against a computation
by hand, figures, the paper overlay, bad input. No JAX."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import yaml

from experiments import report
from slacjax import reference, stats

STEPS = (0, 50_000, 100_000)


def write_run(run_dir: pathlib.Path, task: str, returns: dict, seeds: int | None = None,
              action_repeat: int | None = None, hours_per_step: float = 1e-5,
              implementation: str | None = None) -> None:
    """A run dir with eval rows {seed: {env_step: (stochastic, greedy)}}: one seed at the top,
    or (seeds given) a multi-seed run dir with seed<k>/metrics.jsonl."""
    run_dir.mkdir(parents=True)
    first = min(returns)
    config = dict(task=task, seed=first, seeds=seeds or 1, action_repeat=action_repeat)
    if implementation is not None:
        config["implementation"] = implementation
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    for seed, evals in returns.items():
        folder = run_dir / f"seed{seed}" if seeds else run_dir
        folder.mkdir(exist_ok=True)
        rows = [dict(phase="train", env_step=1, loss=0.5)]
        rows += [dict(phase="eval", env_step=step, return_stochastic=stochastic,
                      return_stochastic_std=1.0, return_greedy=greedy, return_greedy_std=1.0,
                      wall_time=step * hours_per_step * 3600)
                 for step, (stochastic, greedy) in evals.items()]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def known_returns(task_index: int, seed: int) -> dict:
    return {step: (100.0 * task_index + 10.0 * seed + step / 1000, 5.0 * seed + step / 2000)
            for step in STEPS}


@pytest.fixture
def sweep(tmp_path):
    """cheetah_run: seeds 0-2 as single-seed run dirs; walker_run (no paper curve): seeds 0-1
    in one multi-seed run dir."""
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root / "cheetah_run" / f"seed{seed}", "cheetah_run",
                  {seed: known_returns(1, seed)})
    write_run(root / "walker_run" / "seeds0-1", "walker_run",
              {seed: known_returns(2, seed) for seed in range(2)}, seeds=2)
    return root


def by_hand_cell(values) -> str:
    values = np.asarray(values, dtype=float)
    picks = np.random.default_rng(0).integers(0, values.size, size=(10_000, values.size))
    low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    return f"{values.mean():.1f} [{low:.1f}, {high:.1f}] (n={values.size})"


def test_report_numbers_equal_a_computation_by_hand(sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(sweep), f"out={out}"]) == 0
    text = (out / "report.md").read_text()
    stochastic = [known_returns(1, seed)[100_000][0] for seed in range(3)]
    greedy = [known_returns(1, seed)[100_000][1] for seed in range(3)]
    paper = reference.curve("cheetah_run").returns_at(100_000)
    assert (f"| cheetah_run | 100k | {by_hand_cell(stochastic)} | {by_hand_cell(greedy)} "
            f"| {by_hand_cell(paper)} |") in text
    walker = [known_returns(2, seed)[100_000][0] for seed in range(2)]
    assert "| walker_run | 100k | " + by_hand_cell(walker) in text
    assert "| cheetah_run | 500k | — | — |" in text

    with (out / "curves.csv").open() as file:
        rows = {(row["task"], row["env_step"]): row for row in csv.DictReader(file)}
    row = rows["cheetah_run", "100000"]
    assert by_hand_cell(stochastic).startswith(f"{float(row['stochastic_mean']):.1f} [")
    assert row["paper_mean"] == f"{paper.mean():.2f}" and row["paper_n_seeds"] == "10"
    assert rows["walker_run", "100000"]["paper_mean"] == ""

    grouped = report.by_task(report.find_runs([sweep]))
    steps, mean, low, high = report.curve(grouped["walker_run"], "stochastic")
    by_seed = np.array([[known_returns(2, seed)[step][0] for step in STEPS] for seed in range(2)])
    np.testing.assert_array_equal(steps, STEPS)
    np.testing.assert_allclose(mean, by_seed.mean(axis=0))
    assert np.all(low <= mean) and np.all(mean <= high)
    np.testing.assert_allclose([low[-1], high[-1]], [by_seed[:, -1].min(), by_seed[:, -1].max()])

    scores = np.array(stochastic + walker) / 1000
    assert f"| slacjax | 100k | {scipy.stats.trim_mean(scores, 0.25):.3f} [" in text
    gap = np.mean(1 - scores)
    assert text.split("| slacjax | 100k |")[1].split("\n")[0].split(" | ")[3].startswith(
        f"{gap:.3f} [")
    # the paper has no walker_run: no paper aggregate on these tasks
    assert "| SLAC paper | 100k |" not in text


def test_figures_and_the_paper_overlay(sweep, tmp_path):
    out = tmp_path / "out"
    assert report.main([str(sweep), f"out={out}"]) == 0
    for name in ("curves.png", "curve_cheetah_run.png", "curve_walker_run.png",
                 "aggregates.png", "profiles.png", "wall_clock.png"):
        assert (out / name).stat().st_size > 1000, name
    assert "| cheetah_run | 4 (4) | 3 (0, 1, 2) | 100,000 | 1.00 | yes |" in (
        out / "report.md").read_text()
    grouped = report.by_task(report.find_runs([sweep]))
    for task, expected in (("cheetah_run", True), ("walker_run", False)):
        figure, axis = report.plt.subplots()
        assert report.draw_task(axis, task, grouped[task]) is expected
        labels = [line.get_label() for line in axis.get_lines()]
        assert any(label.startswith("SLAC paper") for label in labels) is expected
        report.plt.close(figure)


def test_paper_aggregates_where_it_has_every_task(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root / f"seed{seed}", "cheetah_run", {seed: known_returns(1, seed)})
    results = report.aggregates(report.by_task(report.find_runs([root])))
    paper = [values for who, step, values in results if who == "SLAC paper" and step == 100_000]
    trials = reference.curve("cheetah_run").returns_at(100_000) / 1000
    assert paper[0]["IQM"][0] == pytest.approx(scipy.stats.trim_mean(trials, 0.25))


def test_stratified_bootstrap_resamples_within_tasks():
    scores = [np.array([0.1, 0.2, 0.3]), np.array([0.9, 1.1])]
    for draw in stats.stratified_resamples(scores, 50, seed=1):
        assert set(draw[0]) <= {0.1, 0.2, 0.3} and set(draw[1]) <= {0.9, 1.1}
    value, low, high = stats.aggregate_ci(scores, stats.optimality_gap)
    assert value == pytest.approx(np.mean([0.9, 0.8, 0.7, 0.1, 0.0]))
    assert low <= value <= high
    fraction = stats.profile(scores, np.array([0.0, 0.25, 1.0]))
    np.testing.assert_allclose(fraction, [(1 + 1) / 2, (1 / 3 + 1) / 2, (0 + 0.5) / 2])


def test_sweep_dir_finds_its_jobs_run_dirs(tmp_path):
    for seed in range(2):
        write_run(tmp_path / "runs" / "cheetah_run" / f"seed{seed}", "cheetah_run",
                  {seed: known_returns(1, seed)})
    sweep_dir = tmp_path / "multirun" / "2026-01-01_00-00-00"
    sweep_dir.mkdir(parents=True)
    saved = dict(hydra=dict(sweeper=dict(params=None), runtime=dict(cwd=str(tmp_path)),
                            overrides=dict(task=["seed=0,1", "eval_every=80"])),
                 task="cheetah_run", seed=0, seeds=1, eval_every=10_000,
                 run_dir="runs/${task}/${seed_dir:${seed},${seeds}}")
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(saved))
    runs = report.find_runs([sweep_dir])
    assert [run.seed for run in runs] == [0, 1]


@pytest.mark.parametrize("case", ["empty", "no_eval", "mixed_repeat", "disjoint", "missing"])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    if case == "no_eval":
        write_run(root / "a", "cheetah_run", {0: {}})
    if case == "mixed_repeat":
        write_run(root / "a", "cheetah_run", {0: known_returns(1, 0)})
        write_run(root / "b", "cheetah_run", {1: known_returns(1, 1)}, action_repeat=2)
    if case == "disjoint":
        write_run(root / "a", "cheetah_run", {0: {10_000: (1.0, 1.0)}})
        write_run(root / "b", "cheetah_run", {1: {20_000: (1.0, 1.0)}})
    path = root / "nowhere" if case == "missing" else root
    assert report.main([str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ")


def test_report_imports_no_jax():
    code = "import sys, experiments.report; sys.exit('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=pathlib.Path(__file__).parents[1],
                          timeout=120).returncode == 0


def test_a_half_written_last_line_is_skipped_in_one_line(sweep, tmp_path, capsys):
    """What a kill during a row write leaves: the report is the same, plus one line naming
    the file and line it skipped."""
    assert report.main([str(sweep), f"out={tmp_path / 'whole'}"]) == 0
    capsys.readouterr()
    metrics = sweep / "cheetah_run" / "seed1" / "metrics.jsonl"
    lines = metrics.read_text().count("\n")
    with metrics.open("a") as file:
        file.write('{"phase": "tr')
    assert report.main([str(sweep), f"out={tmp_path / 'torn'}"]) == 0
    printed = capsys.readouterr()
    assert printed.err == (f"skipped {metrics}:{lines + 1}, a half-written last line (13 bytes: "
                           "a row write cut off by a kill or a full disk)\n")
    assert printed.out == f"wrote {tmp_path / 'torn' / 'report.md'}\n"
    assert ((tmp_path / "torn" / "curves.csv").read_text()
            == (tmp_path / "whole" / "curves.csv").read_text())


def test_a_bad_line_before_the_last_names_its_file_and_line(sweep, capsys):
    metrics = sweep / "cheetah_run" / "seed1" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join([lines[0], '{"phase": "tr\n', *lines[1:]]))
    assert report.main([str(sweep)]) == 2
    assert capsys.readouterr().err == (f"error: {metrics}:2: not a JSON row (Unterminated "
                                       "string starting at: column 11)\n")


def test_a_file_path_says_what_the_report_expects(sweep, capsys):
    metrics = sweep / "cheetah_run" / "seed1" / "metrics.jsonl"
    assert report.main([str(metrics)]) == 2
    assert capsys.readouterr().err == (
        f"error: {metrics} is a file; expected {report.EXPECTED}: its folder {metrics.parent} "
        "is one\n")
    assert report.main([str(sweep / "nowhere")]) == 2
    assert f"{sweep / 'nowhere'} does not exist; expected a run dir" in capsys.readouterr().err


def test_the_curves_band_stays_within_the_seeds_returns():
    """Catch-or-miss seeds (returns 0 or 950): the mean's interval never leaves [0, 950]."""
    seeds = [(0.0, 950.0), (0.0, 950.0), (950.0, 950.0), (0.0, 0.0)]
    runs = [report.Run(pathlib.Path(f"seed{seed}"), "ball_in_cup_catch", 4, seed,
                       {step: dict(return_stochastic=value)
                        for step, value in zip((10_000, 20_000), values)})
            for seed, values in enumerate(seeds)]
    steps, mean, low, high = report.curve(runs, "stochastic")
    np.testing.assert_array_equal(steps, [10_000, 20_000])
    np.testing.assert_allclose(mean, [237.5, 712.5])
    assert np.all(low >= 0.0) and np.all(high <= 950.0) and np.all((low <= mean) & (mean <= high))


def test_curves_name_the_implementation(tmp_path):
    write_run(tmp_path / "port", "cheetah_run", {0: known_returns(1, 0)},
              implementation="slac.pytorch 8b9d520")
    runs = report.find_runs([tmp_path])
    assert [run.implementation for run in runs] == ["slac.pytorch 8b9d520"]
    figure, axis = report.plt.subplots()
    report.draw_task(axis, "cheetah_run", runs)
    labels = axis.get_legend_handles_labels()[1]
    assert "slac.pytorch 8b9d520 stochastic (mean over seeds, 95% CI)" in labels
    report.plt.close(figure)


def test_another_implementation_is_drawn_beside_with_the_difference_of_means(tmp_path):
    """The port's seeds are no seeds of slacjax's: the report is slacjax's, and a side-by-side
    section gives both means and their difference with its interval at each common step."""
    root = tmp_path / "runs"
    ours = {0: (110.0, 0.0), 1: (130.0, 0.0), 2: (150.0, 0.0)}
    theirs = {3: (100.0, 0.0), 4: (120.0, 0.0)}
    for seed, returns in ours.items():
        write_run(root / f"slacjax{seed}", "cheetah_run", {seed: {STEPS[-1]: returns}})
    for seed, returns in theirs.items():
        write_run(root / f"port{seed}", "cheetah_run", {seed: {STEPS[-1]: returns}},
                  implementation="slac.pytorch 8b9d520")
    assert report.main([str(root), f"out={tmp_path / 'out'}"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| cheetah_run | 4 (4) | 3 (0, 1, 2) | 100,000 |" in text  # slacjax's seeds
    difference, low, high = stats.bootstrap_difference_ci([110, 130, 150], [100, 120])
    assert difference == pytest.approx(20.0) and low < 20.0 < high
    assert (f"| 100,000 | 130.0 [{stats.bootstrap_mean_ci(np.array([110.0, 130, 150]))[0]:.1f}"
            in text)
    assert f"| +20.0 [{low:+.1f}, {high:+.1f}] |" in text
    assert (tmp_path / "out" / "side_by_side_cheetah_run.png").stat().st_size > 0


def test_bootstrap_difference_interval_shifts_with_the_groups():
    difference, low, high = stats.bootstrap_difference_ci([1.0, 1.0, 1.0], [0.0, 0.0])
    assert (difference, low, high) == (1.0, 1.0, 1.0)
    difference, low, high = stats.bootstrap_difference_ci([0.0, 10.0], [0.0, 10.0])
    assert difference == 0.0 and low == pytest.approx(-10.0) and high == pytest.approx(10.0)
