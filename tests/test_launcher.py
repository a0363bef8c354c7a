"""The training launcher end to end: smoke run, crashes and exact resume, signals, one writer
per run dir, bad input.

The runs are subprocesses of `python -m experiments.run` (the user's command), but for one
uninterrupted run in this process (which can see the jit caches). To keep the suite short they
use the smoke preset with a 160-env-step budget (10 training updates); the unmodified preset is
what `make smoke` runs.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import run as run_module
from experiments.run import experiment_config
from slacjax import checkpoint, compile_ahead, logger, run_state, signals, trainer
from slacjax import run_dir as run_dir_lib
from slacjax.compile_ahead import PhasePrograms
from slacjax.tasks import PLANET_TASKS

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["preset=smoke", "env_steps=160", "log_every=20"]
TIMING_KEYS = {"wall_time", "env_steps_per_s", "eval_seconds"}


def command(module: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", module, *overrides]


def run(module: str, *overrides: str, timeout: float = 400, **kwargs):
    return subprocess.run(command(module, *overrides), cwd=kwargs.pop("cwd", REPO),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def run_here(monkeypatch, capfd, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m experiments.run *overrides` in this process, for refusals that come before
    any training (no interpreter and JAX start-up) -> its exit status and what it printed."""
    monkeypatch.setattr(sys, "argv", ["run", *overrides])
    capfd.readouterr()
    try:
        run_module.main()
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    stdout, stderr = capfd.readouterr()
    return subprocess.CompletedProcess(sys.argv, status, stdout, stderr)


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


def final_checkpoint(run_dir: Path, action_dim: int = 6):
    """-> (state, replay, meta) of the run dir's latest checkpoint (stacked [N, ...])."""
    cfg = run_dir_lib.load_config(run_dir)
    steps = trainer.make_steps(cfg.agent_config(), action_dim, cfg.seeds)
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        return checkpoints.restore(checkpoints.latest(), *run_state.abstract_trees(
            steps, cfg.seeds, cfg.replay_capacity))
    finally:
        checkpoints.close()


def started_trainer(cfg, resume: bool = False) -> trainer.Trainer:
    """The run's trainer, started, without the background compile of the update steps (for
    tests that never update: on a CPU it costs a minute)."""
    trainer.evaluation.ensure_gl()
    trainer_ = trainer.Trainer(cfg, Path(cfg.run_dir).resolve())
    try:
        trainer_.start(resume=resume, compile_ahead=False)
    except BaseException:
        trainer_.close()
        raise
    return trainer_


def make_run_dir(run_dir: Path, *overrides: str, checkpoints: int = 1) -> Path:
    """A smoke run dir (with `overrides`) holding its config and `checkpoints` checkpoints of
    the untrained agent(s)."""
    cfg = experiment_config([*SMOKE, *overrides, f"run_dir={run_dir}"])
    run_dir.mkdir(parents=True)
    run_ = started_trainer(cfg)
    try:
        for _ in range(checkpoints):
            run_.save_checkpoint()
    finally:
        run_.close()
    return run_dir


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("saved") / "run", checkpoints=2)


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
    for key in ("latent_loss", "kl", "image_nll", "reward_nll", "reward_mse",
                "latent_grad_norm", "critic_loss", "actor_loss", "alpha_loss", "alpha",
                "entropy", "q_mean", "wall_time", "env_step", "discounted_return"):
        assert np.isfinite(train[key]), key
    assert train["entropy_uniform"] == pytest.approx(6 * np.log(2))  # cheetah: 6 action dims
    assert {"return_stochastic", "return_greedy", "paper_return"} <= set(rows[-1])
    for mode in ("stochastic", "greedy"):  # one episode per policy in the smoke preset
        assert rows[-1][f"returns_{mode}"] == [pytest.approx(rows[-1][f"return_{mode}"])]
    assert rows[-1]["env_step"] == 160
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    assert (run_dir / "diagnostics.png").stat().st_size > 0
    media = {path.suffix for path in (run_dir / "media").iterdir()}
    assert media == {".png", ".gif"}
    assert run_dir_lib.load_config(run_dir).task == "cheetah_run"
    state, replay, meta = final_checkpoint(run_dir)
    assert meta["counters"]["phase"] == "done" and meta["counters"]["env_steps"] == 160
    assert state.step.shape == (1,)
    assert int(replay.size[0]) == 30 + 10 + 4  # transitions + episode-start frames


def wait_for(condition, process, seconds: float = 400) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow(200)
@pytest.mark.xdist_group("smoke_programs")
def test_smoke_run_and_exact_resume_after_sigkill(tmp_path, capfd):
    """One uninterrupted smoke run (every phase), in this process: its phases call exactly the
    programs warmed up in the background (each step's jit cache grows by one entry; a second
    would mean a phase recompiled). The same run by the user's command, killed before any
    checkpoint, starts over on the same command; SIGKILLed after the end of collection's
    checkpoint and left with a torn last row, it resumes, drops that row in one line and logs
    the same numbers."""
    uninterrupted = tmp_path / "uninterrupted"
    cfg = experiment_config([*SMOKE, f"run_dir={uninterrupted}"])
    steps = trainer.make_steps(cfg.agent_config(), 6, 1)
    before = steps.pretrain._cache_size(), steps.train._cache_size()
    assert trainer.run(cfg) == 0
    after = steps.pretrain._cache_size(), steps.train._cache_size()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    stdout, stderr = capfd.readouterr()
    assert "Traceback" not in stderr and "resumed from" not in stdout
    assert "WARNING" not in stderr, stderr[-3000:]
    check_finished_smoke_run(uninterrupted, stdout)

    run_dir = tmp_path / "killed"
    arguments = command("experiments.run", *SMOKE, f"run_dir={run_dir}")

    def killed_when(condition) -> str:
        """Starts the run, SIGKILLs it once `condition()` holds -> what it printed."""
        with open(tmp_path / "out.txt", "w+") as out:
            process = subprocess.Popen(arguments, cwd=REPO, stdout=out,
                                       stderr=subprocess.DEVNULL)
            wait_for(condition, process)
            process.send_signal(signal.SIGKILL)
            process.wait()
            out.seek(0)
            return out.read()

    # What a run killed before its first checkpoint leaves: its config and some rows. The
    # same command starts over (killed once the end of collection is checkpointed: orbax
    # renames the directory there once complete).
    run_dir.mkdir()
    run_dir_lib.save_config(experiment_config([*SMOKE, f"run_dir={run_dir}"]), run_dir)
    logger.MetricsLog(run_dir).write({"phase": "collect", "env_step": 20})
    printed = killed_when(lambda: any((run_dir / "checkpoints").glob("*_0")))
    assert "no complete checkpoint" in printed and "starting it over" in printed
    # A kill during a row write leaves a torn last line: the resume drops it in one line.
    metrics = run_dir / logger.METRICS_FILE
    torn_line = metrics.read_bytes().count(b"\n") + 1
    with metrics.open("a") as file:
        file.write('{"phase": "tr')

    resumed = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first_line = resumed.stdout.splitlines()[0]
    assert first_line.startswith(f"run dir {run_dir}: cheetah_run, seed 0, 160 env steps on")
    lines = [line for line in resumed.stdout.splitlines() if line.startswith("resumed from")]
    assert len(lines) == 1, resumed.stdout
    dropped = [line for line in resumed.stdout.splitlines() if line.startswith("dropped ")]
    assert dropped == [f"dropped {metrics}:{torn_line}, a half-written last line (13 bytes: a "
                       "row write cut off by a kill or a full disk)"], resumed.stdout
    match = re.fullmatch(r"resumed from (\S+) at env step (\d+)", lines[0])
    assert match and Path(match[1]).parent == run_dir / "checkpoints"
    assert int(match[2]) == 120  # after collection (or pretraining)
    check_finished_smoke_run(run_dir, resumed.stdout)

    # Rows after the checkpoint are redone, not repeated, and equal the uninterrupted run's;
    # so are the final state (params, optimisers, RNG) and replay.
    assert rows_without_timing(run_dir) == rows_without_timing(uninterrupted)
    state, replay, _ = final_checkpoint(run_dir)
    state_a, replay_a, _ = final_checkpoint(uninterrupted)
    for tree, tree_a in ((state, state_a), (replay, replay_a)):
        assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), tree, tree_a))


@pytest.mark.xdist_group("smoke_programs")
def test_one_writer_per_run_dir_and_sigterm_saves_a_checkpoint(tmp_path):
    """A second process on a live run dir is refused naming the holder; the first goes on,
    stops at a checkpoint on SIGTERM, and its rows are intact."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen(command("experiments.run", *SMOKE, f"run_dir={run_dir}"),
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: logger.read_rows(run_dir), first)  # collecting
    second = run("experiments.run", *SMOKE, f"run_dir={run_dir}")
    assert_refused(second, f"run dir {run_dir}", "in use by training", socket.gethostname(),
                   f"PID {first.pid}")
    evaluate = run("experiments.evaluate", f"run_dir={run_dir}", "video=true")
    assert first.poll() is None
    first.send_signal(signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGTERM: stopping after" in stderr
    assert "stopped by SIGTERM" in stdout and "Traceback" not in stderr
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    assert checkpoints.meta(checkpoints.latest())["counters"]["env_steps"] > 0
    checkpoints.close()
    collected = [row["env_step"] for row in logger.read_rows(run_dir)
                 if row["phase"] == "collect"]  # one writer's rows: in order, none twice
    assert collected == list(range(20, 20 * len(collected) + 1, 20))
    # Evaluating with videos needs the lock too (or no checkpoint was there yet).
    assert_refused(evaluate)
    assert "in use by training" in evaluate.stderr or "no checkpoint" in evaluate.stderr


def test_a_second_ctrl_c_exits_at_once(monkeypatch, capsys):
    exits = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)
    previous = signal.getsignal(signal.SIGINT)
    with signals.StopRequests(lambda: "the current agent step",
                              lambda: "/runs/x/checkpoints/3") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT and not exits
        os.kill(os.getpid(), signal.SIGINT)
        assert exits == [128 + signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is previous
    printed = capsys.readouterr().err.split("\n")
    assert ("SIGINT: stopping after the current agent step, then saving a checkpoint (send it "
            "again to exit at once)") in printed
    assert ("SIGINT again: exiting now without a new checkpoint; the next run resumes from "
            "/runs/x/checkpoints/3") in printed


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
def test_run_dir_of_another_run_is_refused(run_copy, override, expected, monkeypatch, capfd):
    before = {path: stamp for path, stamp in snapshot(run_copy).items()
              if path != ".slacjax.lock"}
    assert_refused(run_here(monkeypatch, capfd, *SMOKE, f"run_dir={run_copy}", override),
                   "belongs to another run", expected)
    assert {path: stamp for path, stamp in snapshot(run_copy).items()
            if path != ".slacjax.lock"} == before


def test_foreign_dirs_are_refused(tmp_path, monkeypatch, capfd):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_refused(run_here(monkeypatch, capfd, *SMOKE, f"run_dir={foreign}", "overwrite=true"),
                   "not a slacjax run dir")
    assert sorted(os.listdir(foreign)) == ["notes.txt"]


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


def test_read_only_run_dir_is_refused_before_start(run_copy):
    # As root, chmod does not make a directory read-only: the lock's write fails instead.
    script = ("import errno, os, sys\nfrom slacjax import run_lock\nopen_file = os.open\n"
              "def refuse(path, *args):\n"
              "    if str(path).endswith(run_lock.LOCK_FILE):\n"
              "        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))\n"
              "    return open_file(path, *args)\n"
              "os.open = refuse\n"
              "from experiments.run import main; sys.argv = ['run'] + sys.argv[1:]; main()")
    before = snapshot(run_copy)
    result = subprocess.run([sys.executable, "-c", script, *SMOKE, f"run_dir={run_copy}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert_refused(result, str(run_copy), "Read-only file system")
    assert "resumed from" not in result.stdout
    assert snapshot(run_copy) == before


def test_evaluate_reports_both_returns_and_writes_a_video(run_copy, tmp_path):
    result = run("experiments.evaluate", f"run_dir={run_copy}", "episodes=1", "video=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at env step 0" in result.stdout
    assert "stochastic return:" in result.stdout and "greedy return:" in result.stdout
    videos = sorted(path.name for path in (run_copy / "media").glob("policy_*"))
    assert videos == ["policy_000000000_greedy.mp4", "policy_000000000_stochastic.mp4"]
    assert_refused(run("experiments.evaluate", f"run_dir={run_copy}", "checkpoint=7"),
                   "no checkpoint at env step 7")
    assert_refused(run("experiments.evaluate", "episodes=0", f"run_dir={run_copy}"),
                   "episodes must be positive")


# ------------------------------------------------------------------------ in-process parts


def smoke_config(run_dir: Path, *overrides: str):
    return experiment_config([*SMOKE, *overrides, f"run_dir={run_dir}"])


def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_goes_on(run_copy, capsys):
    newest = run_copy / "checkpoints" / "000000000_1"  # <env step>_<number>
    largest = max((path for path in newest.rglob("*") if path.is_file()),
                  key=lambda path: path.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    opened = run_dir_lib.open_run_dir(smoke_config(run_copy))
    try:
        assert opened.resume
        trainer_ = started_trainer(smoke_config(run_copy), resume=True)
        try:
            printed = capsys.readouterr().out
            assert re.search(rf"skipped checkpoint {newest}: .*; moved to 000000000_1\.corrupt",
                             printed)
            assert (f"resumed from {run_copy / 'checkpoints' / '000000000_0'} at env step 0"
                    in printed)
            trainer_.begin_episodes()
            trainer_.step_envs(np.zeros((1, 6), np.float32), training=False)
            assert trainer_.counters.env_steps == 4
            assert trainer_.save_checkpoint() == run_copy / "checkpoints" / "000000004_1"
        finally:
            trainer_.close()
    finally:
        opened.close()
    assert (run_copy / "checkpoints" / "000000000_1.corrupt").is_dir()  # kept for a look


def test_a_bad_metrics_line_refuses_the_resume_in_one_line(run_copy, monkeypatch, capfd):
    """A complete line of metrics.jsonl that is not a row stops the resume before any
    training, naming the file and line."""
    metrics = run_copy / logger.METRICS_FILE
    metrics.write_text('{"phase": "collect", "env_step": 20}\nnot a row\n')
    result = run_here(monkeypatch, capfd, *SMOKE, f"run_dir={run_copy}")
    assert_refused(result, f"{metrics}:2: not a JSON row", "overwrite=true")
    assert metrics.read_text() == '{"phase": "collect", "env_step": 20}\nnot a row\n'


def test_checkpoints_of_the_single_seed_layout_resume(run_copy, capsys):
    """A run dir written before the seed axis (its checkpoints hold one agent's trees, its
    episode count among the counters: format 1) resumes, with the axis added."""
    cfg = smoke_config(run_copy)
    steps = trainer.make_steps(cfg.agent_config(), 6, 1)
    checkpoints = checkpoint.Checkpoints(run_copy)
    state, replay, meta = checkpoints.restore(1, *run_state.abstract_trees(
        steps, 1, cfg.replay_capacity))
    counters = {key: value for key, value in meta["counters"].items()
                if key != "physics_errors"}
    old_meta = dict(counters={**counters, "episodes": 3, "last_episode_return": 1.5,
                              "last_eval_return": None},
                    action_dim=6, metric_sum={"kl": 2.0}, metric_weight=1, log_rows=0,
                    identity=meta["identity"])
    checkpoints.save(*jax.tree.map(lambda leaf: leaf[0], (state, replay)), old_meta)
    checkpoints.close()
    trainer_ = started_trainer(cfg, resume=True)
    try:
        assert (f"resumed from {run_copy / 'checkpoints' / '2'} at env step 0"
                in capsys.readouterr().out)
        assert trainer_.episodes.counters == [run_state.SeedCounters(3, 1.5)]
        assert trainer_.state.step.shape == (1,) and trainer_.replay.size.shape == (1,)
        assert trainer_.phase_rows.weight == 1
        np.testing.assert_array_equal(trainer_.phase_rows.sums["kl"], [2.0])
    finally:
        trainer_.close()


def test_overwrite_says_what_it_deletes_and_clears_only_a_run_dir(run_copy, capsys):
    opened = run_dir_lib.open_run_dir(smoke_config(run_copy, "overwrite=true",
                                                   "task=walker_walk"))
    try:
        assert not opened.resume
        assert (f"overwrite=true: deleting {run_copy}'s 2 checkpoints, the last at env step 0"
                in capsys.readouterr().out)
        assert [path.name for path in run_copy.iterdir()] == [".slacjax.lock"]
    finally:
        opened.close()


def test_non_finite_values_stop_the_run_in_one_line(run_copy):
    """A NaN loss or a NaN action stops the run naming it; the last good checkpoint stays,
    and a NaN action never reaches the simulator."""
    trainer_ = started_trainer(smoke_config(run_copy), resume=True)
    try:
        good = trainer_.checkpoints.path(trainer_.checkpoints.latest())
        trainer_.phase_rows.add({"latent_loss": jnp.ones(1),
                                 "critic_loss": jnp.full(1, jnp.nan)}, weight=1)
        with pytest.raises(trainer.TrainingStopped, match=r"non-finite critic_loss \(nan, "
                                                          r"update 0\) in the collect phase"):
            trainer_.save_checkpoint()
        with pytest.raises(trainer.TrainingStopped, match="critic_loss"):
            trainer_.flush_rows()
        assert trainer_.checkpoints.numbers() == [0, 1]

        trainer_.phase_rows.sums, trainer_.phase_rows.weight = None, 0
        trainer_.counters.phase = "train"
        trainer_.begin_episodes()
        trainer_.state = trainer_.state.replace(params=jax.tree.map(
            lambda leaf: leaf * jnp.nan, trainer_.state.params))
        with pytest.raises(trainer.TrainingStopped) as raised:
            trainer_.act(trainer_.act_keys, 0, greedy=False)
        assert str(raised.value) == (
            "non-finite action (the policy's output) in the train phase before env step 0; "
            f"stopped, the last good checkpoint is {good}")
    finally:
        trainer_.close()


def test_a_simulator_failure_ends_the_episode_and_is_counted(run_copy, capsys):
    trainer_ = started_trainer(smoke_config(run_copy, "progress=false"), resume=True)
    try:
        trainer_.begin_episodes()
        env = trainer_.episodes.envs[0]
        frame = np.zeros((64, 64, 3), np.uint8)
        env.step = lambda action: (frame, 0.0, False, True,
                                   {"env_steps": 2, "physics_error": "mjWARN_BADCTRL"})
        trainer_.step_envs(np.zeros((1, 6), np.float32), training=False)
        assert trainer_.counters.physics_errors == 1 and trainer_.episodes.over.all()
        assert trainer_.counters.env_steps == 2
        assert ("seed 0: the simulator failed at env step 0 (mjWARN_BADCTRL); its episode ends "
                "there") in capsys.readouterr().err
        del env.step
        trainer_.begin_episodes()  # the next agent step starts a new episode
        assert trainer_.episodes.counters[0].episodes == 2
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
    expected = {f"runs/{task}/seed0" for task in PLANET_TASKS}
    assert {run_dir for _, _, run_dir in planet} == expected


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


def test_a_stop_abandons_the_background_compile_and_says_so(monkeypatch, capsys):
    """Stopped in training while the fused update compiles in the background: the phase's wait
    for it ends at once, the message says the compile is abandoned, and closing does not wait
    for it (XLA cannot stop a compile: the process leaves by os._exit while it runs)."""
    release = threading.Event()
    compiler = PhasePrograms()
    compiler.submit("fused update", None, lambda: release.wait(30))
    while compiler.running() is None:
        time.sleep(0.01)
    try:
        with signals.StopRequests(lambda: compiler.waiting_for("train"), lambda: "nothing",
                                  lambda: compiler.waits_after("train"),
                                  on_request=compiler.abandon):
            os.kill(os.getpid(), signal.SIGTERM)
            started = time.monotonic()
            assert compiler.get("fused update") is False
        compiler.close()
        assert time.monotonic() - started < 5
        assert compile_ahead.compiling()
    finally:
        release.set()
    printed = capsys.readouterr().err
    assert re.search(r"SIGTERM: stopping after the current agent step, then saving a checkpoint; "
                     r"the background compile of the fused update step \(\d+ s so far\) is "
                     r"abandoned \(the next run compiles it again\) \(send it again", printed), \
        printed
