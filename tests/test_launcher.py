"""The training launcher end to end: smoke run, kill and exact resume, signals, bad input.

The runs are subprocesses of `python -m experiments.run` (the user's command). To keep the
suite short they use the smoke preset with a 160-env-step budget (10 training updates); the
unmodified preset is what `make smoke` runs.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.run import experiment_config
from slacjax import checkpoint, logger, trainer
from slacjax.tasks import PLANET_TASKS

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["preset=smoke", "env_steps=160", "log_every=20"]
TIMING_KEYS = {"wall_time", "env_steps_per_s", "eval_seconds"}
CHEETAH_ACTIONS = 6


def command(module: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", module, *overrides]


def run(module: str, *overrides: str, timeout: float = 400, **kwargs):
    return subprocess.run(command(module, *overrides), cwd=kwargs.pop("cwd", REPO),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def snapshot(directory: Path) -> dict:
    """Every file under `directory` with its size and modification time."""
    return {str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(directory.rglob("*")) if path.is_file()}


def assert_refused(result, *expected: str) -> None:
    """One line on stderr, a non-zero exit, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for text in expected:
        assert text in lines[0]


def rows_without_timing(run_dir: Path) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMING_KEYS}
            for row in logger.read_rows(run_dir)]


def final_checkpoint(run_dir: Path):
    """-> (state, replay, meta) of the run dir's latest checkpoint."""
    cfg = trainer.load_config(run_dir)
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        return checkpoints.restore(checkpoints.latest(),
                                   trainer.abstract_state(cfg.agent_config(), CHEETAH_ACTIONS),
                                   trainer.abstract_replay(cfg, CHEETAH_ACTIONS))
    finally:
        checkpoints.close()


def start_without_compiling(cfg, run_dir: Path, resume: bool = False) -> trainer.Trainer:
    """The run's trainer, started, without the background compile of the update steps (for
    tests that never update: on a CPU it costs a minute)."""
    trainer.ensure_gl()
    trainer_ = trainer.trainer_class(cfg)(cfg, run_dir)
    trainer_.compile_ahead = lambda: None
    try:
        trainer_.start(resume=resume)
    except BaseException:
        trainer_.close()
        raise
    return trainer_


def make_run_dir(run_dir: Path, *overrides: str) -> Path:
    """A smoke run dir (with `overrides`) holding its config and one checkpoint of the
    untrained agent(s)."""
    cfg = experiment_config([*SMOKE, *overrides, f"run_dir={run_dir}"])
    trainer.prepare_run_dir(cfg)
    run_dir.mkdir(parents=True)
    run_ = start_without_compiling(cfg, run_dir)
    try:
        run_.save_checkpoint()
    finally:
        run_.close()
    return run_dir


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("saved") / "run")


@pytest.fixture
def run_copy(saved_run, tmp_path):
    """A copy of a run dir that a test may try to misuse."""
    copy = tmp_path / "copy"
    shutil.copytree(saved_run, copy)
    return copy


def check_finished_smoke_run(run_dir: Path, stdout: str) -> None:
    assert "done: 160 env steps" in stdout
    rows = logger.read_rows(run_dir)
    assert [row["phase"] for row in rows] == (["collect"] * 6 + ["pretrain"] * 2 + ["train"] * 2
                                              + ["eval"])
    train = rows[-2]
    for key in ("latent_loss", "kl", "image_nll", "reward_nll", "critic_loss", "actor_loss",
                "alpha_loss", "alpha", "entropy", "q_mean", "wall_time", "env_step"):
        assert np.isfinite(train[key]), key
    assert {"return_stochastic", "return_greedy"} <= set(rows[-1])
    assert rows[-1]["env_step"] == 160
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    media = {path.suffix for path in (run_dir / "media").iterdir()}
    assert media == {".png", ".gif"}
    assert trainer.load_config(run_dir).task == "cheetah_run"
    _, replay, meta = final_checkpoint(run_dir)
    assert meta["counters"]["phase"] == "done" and meta["counters"]["env_steps"] == 160
    assert int(replay.size) == 30 + 10 + 4  # transitions + episode-start frames


@pytest.mark.slow(150)
@pytest.mark.xdist_group("smoke_programs")
def test_smoke_run_and_exact_resume_after_sigkill(tmp_path):
    """One uninterrupted smoke run (every phase), then the same run SIGKILLed after its first
    checkpoint (the end of pretraining) and rerun: it resumes and logs the same numbers."""
    uninterrupted = tmp_path / "uninterrupted"
    result = run("experiments.run", *SMOKE, f"run_dir={uninterrupted}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "resumed from" not in result.stdout
    check_finished_smoke_run(uninterrupted, result.stdout)

    run_dir = tmp_path / "killed"
    arguments = command("experiments.run", *SMOKE, f"run_dir={run_dir}")
    process = subprocess.Popen(arguments, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not (run_dir / "checkpoints" / "0").exists():  # orbax renames it there once complete
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_rows = logger.read_rows(run_dir)
    assert killed_rows and killed_rows[-1]["env_step"] < 160

    resumed = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [line for line in resumed.stdout.splitlines() if line.startswith("resumed from")]
    assert len(lines) == 1, resumed.stdout
    match = re.fullmatch(r"resumed from (\S+) at env step (\d+)", lines[0])
    assert match and Path(match[1]).parent == run_dir / "checkpoints"
    assert int(match[2]) == 120  # after collection and pretraining
    check_finished_smoke_run(run_dir, resumed.stdout)

    # Rows after the checkpoint are redone, not repeated, and equal the uninterrupted run's;
    # so are the final state (params, optimisers, RNG) and replay.
    assert rows_without_timing(run_dir) == rows_without_timing(uninterrupted)
    state, replay, _ = final_checkpoint(run_dir)
    state_a, replay_a, _ = final_checkpoint(uninterrupted)
    for tree, tree_a in ((state, state_a), (replay, replay_a)):
        assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), tree, tree_a))


@pytest.mark.xdist_group("smoke_programs")
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(command("experiments.run", *SMOKE, f"run_dir={run_dir}"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not logger.read_rows(run_dir):  # collecting
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stdout and "Traceback" not in stderr
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    assert checkpoints.numbers() == [0]
    assert checkpoints.meta(0)["counters"]["env_steps"] > 0
    checkpoints.close()


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("override, expected", [
    ("task=cheetah_rn", "Did you mean 'cheetah_run'?"),
    ("bogus_key=1", "Key 'bogus_key' not in"),
    ("seed=one", "could not be converted to Integer"),
    ("env_steps=0", "env_steps must be positive"),
    ("pretrain_updates=-5", "pretrain_updates must be >= 0"),
])
def test_bad_override_is_refused_before_anything_runs(run_copy, override, expected):
    before = snapshot(run_copy)
    assert_refused(run("experiments.run", *SMOKE, f"run_dir={run_copy}", override), expected)
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("override, expected", [
    ("task=walker_walk", "task=cheetah_run (run dir) vs walker_walk (now)"),
    ("agent.batch_sac=8", "agent.batch_sac=4 (run dir) vs 8 (now)"),
    ("seed=1", "seed=0 (run dir) vs 1 (now)"),
])
def test_run_dir_of_another_run_is_refused(run_copy, override, expected):
    before = snapshot(run_copy)
    assert_refused(run("experiments.run", *SMOKE, f"run_dir={run_copy}", override),
                   "belongs to another run", expected)
    assert snapshot(run_copy) == before


def test_corrupt_checkpoint_is_refused(run_copy):
    numbers = [int(path.name) for path in (run_copy / "checkpoints").iterdir()
               if path.name.isdigit()]
    latest = run_copy / "checkpoints" / str(max(numbers))
    for path in (latest / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"not a checkpoint")
    before = snapshot(run_copy)
    assert_refused(run("experiments.run", *SMOKE, f"run_dir={run_copy}"),
                   "could not be restored", str(latest))
    assert snapshot(run_copy) == before


def test_foreign_or_checkpointless_dirs_are_refused(run_copy, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_refused(run("experiments.run", *SMOKE, f"run_dir={foreign}", "overwrite=true"),
                   "not a slacjax run dir")
    assert (foreign / "notes.txt").read_text() == "mine"

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(run_copy / "config.yaml", fresh / "config.yaml")
    assert_refused(run("experiments.run", *SMOKE, f"run_dir={fresh}"), "overwrite=true")
    assert sorted(os.listdir(fresh)) == ["config.yaml"]


def test_missing_gl_is_one_line(run_copy):
    # No GL backend works: what ensure_gl_backend's probes report on a host without the libraries.
    script = ("import sys, slacjax.envs.gl as gl; "
              "gl.probe_backend = lambda backend: 'libEGL.so.1: cannot open shared object'; "
              "from experiments.run import main; sys.argv = ['run'] + sys.argv[1:]; main()")
    environment = {key: value for key, value in os.environ.items() if key != "MUJOCO_GL"}
    before = snapshot(run_copy)
    result = subprocess.run([sys.executable, "-c", script, *SMOKE, f"run_dir={run_copy}"],
                            cwd=REPO, env=environment, capture_output=True, text=True,
                            timeout=300)
    assert_refused(result, "apt-get install")
    assert snapshot(run_copy) == before


def test_overwrite_clears_only_a_run_dir(run_copy):
    cfg = experiment_config([*SMOKE, f"run_dir={run_copy}", "overwrite=true", "task=walker_walk"])
    run_dir, resume = trainer.prepare_run_dir(cfg)
    assert (run_dir, resume) == (run_copy.resolve(), False)
    trainer.clear_run_dir(run_dir)
    assert list(run_copy.iterdir()) == []


def test_evaluate_reports_both_returns_and_writes_a_video(run_copy):
    result = run("experiments.evaluate", f"run_dir={run_copy}", "episodes=1", "video=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at env step 0" in result.stdout
    assert "stochastic return:" in result.stdout and "greedy return:" in result.stdout
    videos = sorted(path.name for path in (run_copy / "media").glob("policy_*"))
    assert len(videos) == 2 and all("000000000" in name for name in videos)
    assert_refused(run("experiments.evaluate", f"run_dir={run_copy}", "checkpoint=7"),
                   "no checkpoint at env step 7")
    assert_refused(run("experiments.evaluate", "episodes=0", f"run_dir={run_copy}"),
                   "episodes must be positive")


# ------------------------------------------------------------------------ in-process parts


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = experiment_config([*SMOKE, f"run_dir={tmp_path / 'run'}"])
    run_dir, _ = trainer.prepare_run_dir(cfg)
    run_dir.mkdir()
    trainer_ = start_without_compiling(cfg, run_dir)
    try:
        trainer_.collect()
        good = trainer_.save_checkpoint()
        trainer_.accumulate({"latent_loss": jnp.float32(1.0), "critic_loss": jnp.float32(jnp.nan)},
                            weight=1)
        with pytest.raises(trainer.TrainingStopped, match="non-finite critic_loss") as raised:
            trainer_.save_checkpoint()
        assert str(good) in str(raised.value)
        assert trainer_.checkpoints.numbers() == [0]
        with pytest.raises(trainer.TrainingStopped, match="critic_loss"):
            trainer_.flush_row()
    finally:
        trainer_.close()


def test_sweeps_launch_one_job_per_combination(tmp_path):
    # The real Hydra entry point with the training replaced by a print of each job's config.
    script = ("import sys; from slacjax import trainer; "
              "trainer.run = lambda cfg: print('JOB', cfg.task, cfg.seed, cfg.run_dir) or 0; "
              "from experiments.run import main; sys.argv = ['run'] + sys.argv[1:]; main()")
    environment = {**os.environ, "PYTHONPATH": str(REPO)}

    def jobs(*arguments):
        result = subprocess.run([sys.executable, "-c", script, *arguments], cwd=tmp_path,
                                env=environment, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("JOB")]

    assert len(jobs("-m", "task=cheetah_run,walker_walk", "seed=0,1,2")) == 6
    planet = jobs("sweep=planet6")
    assert [task for task, _, _ in planet] == list(PLANET_TASKS)
    assert {run_dir for _, _, run_dir in planet} == {f"runs/{task}/seed0"
                                                    for task in PLANET_TASKS}


def test_metrics_log_truncates_for_a_resume(tmp_path):
    log = logger.MetricsLog(tmp_path)
    for step in range(5):
        log.write({"phase": "train", "env_step": step, "loss": float("nan") if step == 4 else 1.0})
    log.truncate(3)
    assert [row["env_step"] for row in logger.read_rows(tmp_path)] == [0, 1, 2]
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["loss"] == 1.0


def test_wandb_is_imported_only_when_enabled(tmp_path):
    check = "import sys, slacjax.trainer, experiments.run; assert 'wandb' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check], cwd=REPO, timeout=120).returncode == 0
    wandb_run = logger.start_wandb(tmp_path, logger.new_wandb_id(), "test", {"task": "x"},
                                   mode="offline", project="slacjax", entity=None, group=None)
    log = logger.MetricsLog(tmp_path, wandb_run)
    log.write({"phase": "train", "env_step": 8, "critic_loss": 1.5, "episode_return": None})
    log.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
