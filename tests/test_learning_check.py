"""The learning check's verdict and its random-policy threshold."""

import json

import numpy as np
import pytest

from experiments import learning_check
from slacjax import random_policy


def write_rows(directory, rows):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def eval_row(step, returns):
    return dict(phase="eval", env_step=step, returns_stochastic=returns,
                return_stochastic=float(np.mean(returns)))


def test_window_mean_quantile_is_the_quantile_of_window_means():
    assert random_policy.window_mean_quantile(np.full(7, 3.0), 5, 0.99) == pytest.approx(3.0)
    two_valued = np.array([0.0, 100.0])
    # one episode: its 0.9 quantile is the high value; the mean of 400 is near 50
    assert random_policy.window_mean_quantile(two_valued, 1, 0.9) == pytest.approx(100.0)
    assert 50 < random_policy.window_mean_quantile(two_valued, 400, 0.99) < 60
    with pytest.raises(ValueError, match="quantile"):
        random_policy.window_mean_quantile(two_valued, 1, 1.0)


def test_random_policy_returns_are_reproducible_per_seed():
    first = random_policy.random_policy_returns("cartpole_swingup", 2, seed=3)
    again = random_policy.random_policy_returns("cartpole_swingup", 2, seed=3)
    other = random_policy.random_policy_returns("cartpole_swingup", 2, seed=4)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (2,) and np.all((first >= 0) & (first <= 1000))
    assert not np.array_equal(first, other)
    with pytest.raises(ValueError, match="episodes"):
        random_policy.random_policy_returns("cartpole_swingup", 0)


def test_last_evaluation_takes_the_last_step_every_seed_logged(tmp_path):
    from experiments import run

    cfg = run.experiment_config(["preset=check", "seeds=2", f"run_dir={tmp_path}"])
    write_rows(tmp_path / "seed0", [eval_row(10_000, [1.0, 2.0]), eval_row(20_000, [5.0, 6.0])])
    write_rows(tmp_path / "seed1", [dict(phase="train", env_step=10_000),
                                    eval_row(10_000, [3.0, 4.0])])
    step, returns = learning_check.last_evaluation(tmp_path, cfg)
    assert step == 10_000
    np.testing.assert_array_equal(returns, [1.0, 2.0, 3.0, 4.0])
    write_rows(tmp_path / "seed1", [dict(phase="train", env_step=10_000)])
    with pytest.raises(SystemExit, match="seed 1 logged no evaluation"):
        learning_check.last_evaluation(tmp_path, cfg)


@pytest.mark.parametrize("returns, status", [([300.0] * 10, 0), ([40.0] * 10, 1)])
def test_the_check_passes_only_above_the_random_policys_quantile(tmp_path, monkeypatch,
                                                                 capsys, returns, status):
    commands = []

    def train(command):
        commands.append(command)
        write_rows(tmp_path, [eval_row(20_000, returns)])
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(learning_check.subprocess, "run", train)
    monkeypatch.setattr(learning_check.random_policy, "random_policy_returns",
                        lambda task, episodes, seed: np.linspace(0.0, 120.0, episodes))
    assert learning_check.main([f"run_dir={tmp_path}", "--random-episodes", "50"]) == status
    assert commands[0][-3:] == ["experiments.run", "preset=check", f"run_dir={tmp_path}"]
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.endswith("NOT LEARNED" if status else ": LEARNED")
    assert "cartpole_swingup" in verdict and "at 20000 env steps" in verdict


def test_bad_input_fails_before_training(monkeypatch, capsys):
    monkeypatch.setattr(learning_check.subprocess, "run", pytest.fail)
    assert learning_check.main(["no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        learning_check.main(["--quantile", "1.5"])


def test_random_baseline_summarises_the_episodes_and_window_quantiles():
    from benchmarks import random_baseline

    row = random_baseline.summary("cartpole_swingup", 3, [1, 2], seed=3)
    returns = random_policy.random_policy_returns("cartpole_swingup", 3, seed=3)
    assert row["mean"] == pytest.approx(returns.mean()) and row["max"] == returns.max()
    # one episode per window, a third of the draws the largest: that is its 0.99 quantile
    assert row["mean_of_1_q0.99"] == pytest.approx(returns.max())
    assert row["mean_of_2_q0.95"] <= row["mean_of_2_q0.99"] <= returns.max()


def test_any_of_tries_the_next_seed_until_one_learns(tmp_path, monkeypatch, capsys):
    returns_by_seed = {0: [40.0] * 10, 1: [300.0] * 10, 2: [300.0] * 10}
    trained = []

    def train(command):
        overrides = dict(item.split("=", 1) for item in command[3:])
        seed = int(overrides["seed"])
        trained.append((seed, overrides["run_dir"]))
        write_rows(tmp_path / f"seed{seed}", [eval_row(20_000, returns_by_seed[seed])])
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(learning_check.subprocess, "run", train)
    monkeypatch.setattr(learning_check.random_policy, "random_policy_returns",
                        lambda task, episodes, seed: np.linspace(0.0, 120.0, episodes))
    assert learning_check.main([f"run_dir={tmp_path}", "--any-of", "3",
                                "--random-episodes", "50"]) == 0
    assert trained == [(0, str(tmp_path / "seed0")), (1, str(tmp_path / "seed1"))]
    out = capsys.readouterr().out
    assert "1 of 2 seeds tried learned (at most 3): PASSED" in out
    verdict = json.loads((tmp_path / "seed1" / "learning_check.json").read_text())
    assert verdict["learned"] and verdict["seed"] == 1
    assert verdict["margin"] == pytest.approx(300.0 - verdict["threshold"], abs=0.01)
    assert not json.loads((tmp_path / "seed0" / "learning_check.json").read_text())["learned"]


def test_a_failed_training_ends_the_check_with_its_status(tmp_path, monkeypatch, capsys):
    calls = []

    def train(command):
        calls.append(command)
        return type("Failed", (), {"returncode": len(calls)})()  # 1: a crash

    monkeypatch.setattr(learning_check.subprocess, "run", train)
    assert learning_check.main([f"run_dir={tmp_path}", "--any-of", "2"]) == 1
    assert len(calls) == 1 and "training exited with 1" in capsys.readouterr().err
    calls[:] = [None]  # the next training exits 2: the run refused its input
    assert learning_check.main([f"run_dir={tmp_path}"]) == 2


def test_bad_flags_and_run_dirs_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(learning_check.subprocess, "run", pytest.fail)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert learning_check.main([f"run_dir={a_file}"]) == 2
    assert "is a file" in capsys.readouterr().err
    for flags, named, other in ((["--quantile", "2"], "--quantile", "--random-episodes"),
                                (["--random-episodes", "1"], "--random-episodes", "--quantile"),
                                (["--any-of", "0"], "--any-of", "--quantile")):
        with pytest.raises(SystemExit) as stop:
            learning_check.main(flags)
        assert stop.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert named in error and other not in error


def test_check_verdicts_rate_interval_and_rule(tmp_path, capsys):
    from benchmarks import check_verdicts

    low, high = check_verdicts.clopper_pearson(9, 10)
    assert low == pytest.approx(0.5550, abs=1e-4) and high == pytest.approx(0.9975, abs=1e-4)
    assert check_verdicts.clopper_pearson(0, 5)[0] == 0.0
    assert check_verdicts.clopper_pearson(5, 5)[1] == 1.0
    run_dirs = []
    for seed, learned in enumerate([True, True, False, True]):
        run_dir = tmp_path / f"seed{seed}"
        run_dir.mkdir()
        (run_dir / "learning_check.json").write_text(json.dumps(dict(
            seed=seed, mean_return=150.0, threshold=120.0, margin=30.0, learned=learned,
            seconds=60.0 * (seed + 10))))
        run_dirs.append(str(run_dir))
    assert check_verdicts.main([*run_dirs, "--any-of", "2"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["learned"] == 3 and row["rate"] == 0.75
    assert row["rule_fails"] == pytest.approx(0.0625)
    assert row["median_minutes"] == pytest.approx(11.5)
