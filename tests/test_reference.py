"""The shipped SLAC reference curves against the table in docs/algorithm.md §6 (same files)."""

import csv
import importlib.util
import math
import pathlib
import sys

import pytest

from slacjax import reference, tasks

# docs/algorithm.md §6: task -> (action repeat, decoder_var, SLAC 100k, SLAC 500k), the
# authors' data/slac/*.csv at 08fb13a, mean over the 10 trials at exactly that env step.
SPEC = {
    "cheetah_run": (4, 0.1, 414, 707),
    "walker_walk": (2, 0.4, 529, 952),
    "ball_in_cup_catch": (4, 0.04, 918, 967),
    "finger_spin": (1, 0.1, 951, 983),
    "cartpole_swingup": (4, 0.1, 328, 793),
    "reacher_easy": (4, 0.01, 343, 795),
}


@pytest.mark.parametrize("task", sorted(SPEC))
def test_reference_reproduces_the_spec_table(task):
    repeat, decoder_var, at_100k, at_500k = SPEC[task]
    curve = reference.curve(task)
    assert (curve.action_repeat, curve.decoder_var) == (repeat, decoder_var)
    assert (tasks.get_task(task).action_repeat, tasks.get_task(task).decoder_var) == (
        repeat, decoder_var)
    assert curve.commit.startswith("08fb13a") and curve.source.startswith("alexlee-gk/slac/")
    for step, spec_value in ((100_000, at_100k), (500_000, at_500k)):
        trials = curve.returns_at(step)
        assert trials.size == 10
        # The table's integers round the mean up or to the nearest (413.499 is 414 there).
        assert math.floor(trials.mean()) <= spec_value <= math.ceil(trials.mean())
        assert reference.mean_at(task, step) == pytest.approx(trials.mean(), abs=0.01)


def test_mean_at_interpolates_between_logged_steps_and_knows_its_range():
    curve = reference.curve("cheetah_run")
    halfway = (curve.mean[10] + curve.mean[11]) / 2  # env steps 100k and 110k
    assert reference.mean_at("cheetah_run", 105_000) == pytest.approx(halfway)
    assert reference.mean_at("cheetah_run", curve.env_step[-1] + 10_000) is None
    assert reference.mean_at("walker_run", 100_000) is None
    assert reference.curve("walker_run") is None


def load_script():
    path = pathlib.Path(__file__).parents[1] / "scripts" / "make_reference.py"
    spec = importlib.util.spec_from_file_location("make_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_reference_keeps_the_decoder_variance_best_before_500k(tmp_path, monkeypatch):
    """0.1 leads before 500k env steps, 0.4 after: 0.1 is kept, missing evaluations skipped."""
    header = ("domain_name,task_name,action_repeat,decoder_var,trial_id,"
              "AverageReturnEvalPolicy,OriginalEnvironmentSteps,NumberOfEpisodes")
    lines = [header]
    for var, early, late in ((0.1, 500.0, 600.0), (0.4, 400.0, 900.0)):
        for trial in range(3):
            for step in (0, 490_000, 500_000, 1_000_000):
                if (var, trial, step) == (0.1, 2, 1_000_000):
                    continue
                value = (early if step < 500_000 else late) + trial
                lines.append(f"toy,task,2.0,{var},{trial},{value},{step},0")
    (tmp_path / "dm_control_toy_task_slac.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "reference.csv"
    monkeypatch.setattr(sys, "argv", ["make_reference.py", str(tmp_path), "--commit", "abc1234",
                                      "--out", str(out)])
    load_script().main()
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert {row["decoder_var"] for row in rows} == {"0.1"}
    assert [row["env_step"] for row in rows] == ["0", "490000", "500000", "1000000"]
    assert [row["n_seeds"] for row in rows] == ["3", "3", "3", "2"]
    assert rows[2]["mean"] == "601.00" and rows[2]["returns"] == "600.00 601.00 602.00"
    assert rows[3]["min"] == "600.00" and rows[3]["max"] == "601.00"
    assert rows[0]["source"] == "alexlee-gk/slac/data/slac/dm_control_toy_task_slac.csv"
    assert rows[0]["action_repeat"] == "2" and rows[0]["commit"] == "abc1234"
