"""Many seeds in one process (`seeds=N`): per-seed files and a combined curve, independent
seeds, kill and resume, each seed's collection equal to a single-seed run's.

CPU JAX is slow: end to end there is one 2-seed smoke run (20 training updates of both
seeds), SIGKILLed after its periodic checkpoint and resumed; the rest runs the collection
phase in-process without compiling the update.
"""

import os
import re
import signal
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.run import experiment_config
from slacjax import logger, trainer
from slacjax import run_dir as run_dir_lib
from slacjax.steps import make_steps
from tests.test_launcher import REPO, command, final_checkpoint, started_trainer, wait_for

# 3 collection episodes, 4 pretraining updates, 2 training episodes (env steps 120-200):
# a periodic checkpoint at env step 160, between them. A small replay keeps checkpoints small.
TWO_SEEDS = ["preset=smoke", "seeds=2", "env_steps=200", "log_every=20", "checkpoint_every=140",
             "replay_capacity=200"]
SEED_DIR_FILES = ["diagnostics.png", "learning_curve.png", "media", "metrics.jsonl"]


def resumed_line(stdout: str) -> re.Match:
    lines = [line for line in stdout.splitlines() if line.startswith("resumed from")]
    assert len(lines) == 1, stdout
    match = re.fullmatch(r"resumed from (\S+) at env step (\d+)", lines[0])
    assert match, lines[0]
    return match


@pytest.mark.slow(210)
def test_two_seeds_train_apart_and_resume_after_sigkill(tmp_path, capfd):
    """The user's command, SIGKILLed after a periodic checkpoint; the same run resumed in this
    process (no second interpreter and JAX start-up)."""
    run_dir = tmp_path / "run"
    arguments = command("experiments.run", *TWO_SEEDS, f"run_dir={run_dir}")
    process = subprocess.Popen(arguments, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    # 0: collection's end, 1: pretraining's end, 2: periodic (folders <env step>_<number>)
    wait_for(lambda: any((run_dir / "checkpoints").glob("*_2")), process, 500)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert all(logger.read_rows(run_dir / f"seed{seed}")[-1]["env_step"] < 200
               for seed in (0, 1))

    capfd.readouterr()
    assert trainer.run(experiment_config([*TWO_SEEDS, f"run_dir={run_dir}"])) == 0
    stdout, stderr = capfd.readouterr()
    assert "Traceback" not in stderr and "done: 200 env steps" in stdout
    match = resumed_line(stdout)
    assert Path(match[1]).parent == run_dir / "checkpoints" and int(match[2]) == 160

    assert sorted(os.listdir(run_dir)) == [
        ".slacjax.lock", "checkpoints", "config.yaml", "learning_curve.png", "seed0", "seed1"]
    assert (run_dir / "learning_curve.png").stat().st_size > 0  # mean ± std across seeds
    rows = {}
    for seed in (0, 1):
        seed_dir = run_dir / f"seed{seed}"
        assert sorted(os.listdir(seed_dir)) == SEED_DIR_FILES
        assert {path.suffix for path in (seed_dir / "media").iterdir()} == {".png", ".gif"}
        rows[seed] = logger.read_rows(seed_dir)
        # Rows after the checkpoint were redone, not repeated.
        assert [row["phase"] for row in rows[seed]] == (["collect"] * 6 + ["pretrain"] * 2
                                                        + ["train"] * 4 + ["eval"])
        assert [row["env_step"] for row in rows[seed]][-5:] == [140, 160, 180, 200, 200]
        train = rows[seed][-2]
        assert all(np.isfinite(train[key]) for key in ("latent_loss", "critic_loss", "alpha"))
        assert {"return_stochastic", "return_greedy"} <= set(rows[seed][-1])
    for first, second in zip(rows[0][6:-1], rows[1][6:-1]):  # independent agents
        assert first["latent_loss"] != second["latent_loss"]

    assert run_dir_lib.load_config(run_dir).seeds == 2
    state, replay, meta = final_checkpoint(run_dir)
    assert meta["counters"]["phase"] == "done" and meta["counters"]["env_steps"] == 200
    assert [counters["episodes"] for counters in meta["seed_counters"]] == [3 + 2] * 2
    assert meta["log_rows"] == [13, 13]
    assert state.step.shape == (2,) and int(state.step[0]) == 4 + 20
    np.testing.assert_array_equal(replay.size, [30 + 3 + 20 + 2] * 2)


# ------------------------------------------------------------------------ in-process parts


def collect(overrides: list[str], run_dir: Path):
    """Runs the collection phase of a fresh run -> (its trainer, still open)."""
    cfg = experiment_config([*overrides, f"run_dir={run_dir}"])
    run_dir.mkdir()
    trainer_ = started_trainer(cfg)
    trainer_.collect()
    return trainer_


def trees_equal(first, second) -> bool:
    return jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), first, second))


def test_each_seed_collects_as_its_single_seed_run_does(tmp_path, capsys):
    """Hopper falls at different agent steps for different seeds (and inside the action
    repeat): each seed's replay still equals the one a `seeds=1` run with its seed fills."""
    trainer.evaluation.ensure_gl()
    hopper = ["preset=smoke", "task=Hopper-v5", "replay_capacity=100"]
    singles = []
    for seed in (0, 1):
        single = collect([*hopper, f"seed={seed}"], tmp_path / f"single{seed}")
        try:
            singles.append(single.replay)
            assert sorted(os.listdir(single.run_dir)) == ["checkpoints", "config.yaml",
                                                          "metrics.jsonl"]
        finally:
            single.close()
    ends = [int(replay.next_episode[0]) for replay in singles]
    assert ends[0] != ends[1]  # the seeds' episodes ended at different steps

    run_dir = tmp_path / "two"
    two = collect([*hopper, "seeds=2"], run_dir)
    try:
        for index, single in enumerate(singles):
            one = jax.tree.map(lambda leaf, index=index: leaf[index:index + 1], two.replay)
            assert trees_equal(one, single)
        assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.yaml", "seed0", "seed1"]
        returns = [[row["episode_return"] for row in logger.read_rows(run_dir / f"seed{seed}")]
                   for seed in (0, 1)]
        assert returns[0] != returns[1]

        # The NaN/inf check names the seed; the last good checkpoint (collection's end) stays.
        good = two.checkpoints.path(0)
        two.phase_rows.add({"latent_loss": jnp.ones(2),
                            "critic_loss": jnp.array([1.0, jnp.nan])}, weight=1)
        with pytest.raises(trainer.TrainingStopped,
                           match=r"non-finite critic_loss \(nan, update 0\) of seed 1 in the "
                                 r"pretrain phase .* the last good checkpoint is "
                                 + re.escape(str(good))):
            two.flush_rows()
        assert two.checkpoints.numbers() == [0]
        replay, seed_counters = two.replay, two.episodes.counters
    finally:
        two.close()

    capsys.readouterr()
    cfg = experiment_config([*hopper, "seeds=2", f"run_dir={run_dir}"])
    opened = run_dir_lib.open_run_dir(cfg)
    try:
        assert opened.resume
        resumed = started_trainer(cfg, resume=True)
        try:
            assert resumed_line(capsys.readouterr().out)[1] == str(good)
            assert resumed.counters.phase == "pretrain"
            assert resumed.episodes.counters == seed_counters
            assert trees_equal(resumed.replay, replay)
        finally:
            resumed.close()
    finally:
        opened.close()


def test_seeds_config_run_dir_and_identity(tmp_path):
    assert experiment_config(["seeds=5"]).run_dir == "runs/cheetah_run/seeds0-4"
    assert experiment_config(["seeds=3", "seed=2"]).run_dir == "runs/cheetah_run/seeds2-4"
    smoke = experiment_config(["preset=smoke", "seeds=2"])
    assert smoke.run_dir == "runs/smoke/cheetah_run/seeds0-1"
    assert experiment_config(["seeds=1"]).run_dir == "runs/cheetah_run/seed0"
    with pytest.raises(ValueError, match="seeds must be positive"):
        experiment_config(["seeds=0"])
    one = experiment_config(["preset=smoke", f"run_dir={tmp_path}"])
    assert one.identity()["seeds"] == 1
    run_dir_lib.save_config(one, tmp_path)
    with pytest.raises(run_dir_lib.LaunchError, match=r"seeds=1 \(run dir\) vs 2 \(now\)"):
        run_dir_lib.open_run_dir(experiment_config(["preset=smoke", "seeds=2",
                                                    f"run_dir={tmp_path}"]))


def test_seed_conv_picks_the_seeds_convolutions(tmp_path):
    trainer.evaluation.ensure_gl()
    for strategy in ("loop", "patches"):
        cfg = experiment_config(["preset=smoke", "seeds=2", f"seed_conv={strategy}",
                                 f"run_dir={tmp_path}"])
        trainer_ = trainer.Trainer(cfg, tmp_path)
        try:
            assert trainer_.steps is make_steps(cfg.agent_config(), 6, 2, None, strategy)
        finally:
            trainer_.close()
    assert experiment_config(["seeds=2"]).seed_conv == "loop"  # the default
