"""Sweeps on a cluster: the `cluster=` config group and the submitit launcher it selects.

No SLURM here: the SLURM launcher is built from the composed config and its sbatch script is
captured instead of submitted. One test sends a job through `cluster=local` (submitit on this
machine) that fails at once on purpose, before any JAX compilation. The requeue signal's
path through the trainer is checked with stand-in handlers.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins

from experiments.run import (
    USER_ERRORS,
    SubmititRequeue,
    compose,
    error_line,
    job_overrides,
    validate,
)

REPO = Path(__file__).resolve().parents[1]
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
LOCAL_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SWEEP = ["task=cheetah_run,walker_walk", "seed=0,1,2"]


def test_without_cluster_jobs_run_here_one_after_another():
    cfg = compose([], with_hydra=True)
    assert cfg.hydra.launcher._target_ == BASIC_LAUNCHER
    assert cfg.hydra.mode is None  # a plain command is one run; -m makes it a sweep
    assert compose([]).progress


def test_slurm_config_is_one_gpu_job_per_run():
    cfg = compose(["cluster=slurm"], with_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_LAUNCHER
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # submitted even without -m
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1)
    assert launcher.cpus_per_task == 8 and launcher.mem_gb == 32
    assert launcher.timeout_min == 24 * 60
    # Stopped at a checkpoint 5 minutes before the time limit, requeued, resumed.
    assert launcher.signal_delay_s == 300 and launcher.max_num_timeout == 3
    assert launcher.partition is None and launcher.account is None  # the cluster's defaults
    assert list(launcher.setup) == ["export MUJOCO_GL=egl"]
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/submitit/%j"
    # Jobs start where the command ran, so relative run dirs mean the same place there.
    assert launcher.additional_parameters.chdir == os.getcwd()
    assert not cfg.progress  # no progress bars in the job's log files


def test_slurm_launcher_fields_can_be_overridden():
    cfg = compose(["cluster=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=rl",
                   "hydra.launcher.timeout_min=600", "hydra.launcher.mem_gb=64",
                   "+hydra.launcher.additional_parameters.mail-type=END", "progress=true"],
                  with_hydra=True)
    launcher = cfg.hydra.launcher
    assert (launcher.partition, launcher.account) == ("gpu", "rl")
    assert (launcher.timeout_min, launcher.mem_gb) == (600, 64)
    assert launcher.additional_parameters["mail-type"] == "END"
    assert launcher.additional_parameters.chdir == os.getcwd()
    assert cfg.progress


def test_local_cluster_uses_submitit_on_this_machine():
    cfg = compose(["cluster=local"], with_hydra=True)
    assert cfg.hydra.launcher._target_ == LOCAL_LAUNCHER
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/submitit/%j"


def test_slurm_sweep_is_one_job_per_combination():
    overrides = ["cluster=slurm", *SWEEP, "hydra.launcher.partition=gpu"]
    jobs = job_overrides(overrides, multirun=True)
    assert len(jobs) == 6
    assert all("cluster=slurm" in job and "hydra.launcher.partition=gpu" in job for job in jobs)
    configs = validate(overrides, multirun=True)
    assert {(cfg.task, cfg.seed) for cfg in configs} == {
        (task, seed) for task in ("cheetah_run", "walker_walk") for seed in (0, 1, 2)}
    assert len({cfg.run_dir for cfg in configs}) == 6
    assert all(cfg.run_dir == f"runs/{cfg.task}/seed{cfg.seed}" for cfg in configs)
    assert not any(cfg.progress for cfg in configs)
    # Without -m, cluster=slurm still submits (one job); with a sweep preset, all of it.
    assert len(validate(["cluster=slurm", "task=walker_walk"], multirun=False)) == 1
    assert len(job_overrides(["cluster=slurm", "sweep=planet6", "seed=0,1"], multirun=False)) == 12


@pytest.mark.parametrize("overrides, expected", [
    (["cluster=slurm", "hydra.launcher.partitio=gpu"], "Key 'partitio' not in 'SlurmQueueConf'"),
    (["cluster=slurm", "hydra.launcher.gpus_per_node=two"], "could not be converted to Integer"),
    (["cluster=slurm", "hydra.launcher.timeout_min=1d"], "could not be converted to Integer"),
    (["cluster=slurmm"], "available: local, slurm"),
    # Launcher settings without a cluster would be silently meaningless: refused.
    (["hydra.launcher.partition=gpu"], "Key 'partition' not in 'BasicLauncherConf'"),
])
def test_bad_cluster_overrides_are_one_line(overrides, expected):
    with pytest.raises(USER_ERRORS) as raised:
        validate([*overrides, "seed=0,1"], multirun=True)
    line = error_line(raised.value)
    assert expected in line and "\n" not in line


def test_bad_launcher_key_is_refused_before_anything_is_submitted(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.run", "-m", "cluster=slurm", "seed=0,1",
         "hydra.launcher.partitio=gpu", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "partitio" in lines[0]
    assert not sweep_dir.exists()


class Submitted(Exception):
    """Raised instead of calling sbatch; carries the sbatch script."""


def test_slurm_launcher_writes_one_array_of_gpu_jobs(tmp_path, monkeypatch):
    from submitit.slurm.slurm import SlurmExecutor

    def capture(executor, command):
        raise Submitted(executor._make_submission_file_text(command, "test"))

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun exists"
    monkeypatch.setattr(SlurmExecutor, "_submit_command", capture)

    sweep_dir = tmp_path / "sweep"
    overrides = ["cluster=slurm", *SWEEP, "hydra.launcher.partition=gpu",
                 "hydra.launcher.account=rl", "hydra.launcher.timeout_min=600",
                 f"hydra.sweep.dir={sweep_dir}"]
    fixed = [override for override in overrides if "," not in override]
    cfg = compose(fixed, with_hydra=True)
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=None, task_function=lambda job_cfg: None, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch(job_overrides(overrides, multirun=True), initial_job_idx=0)
    script = str(submitted.value)
    logs = sweep_dir / "submitit" / "%A_%a"
    for line in ["#SBATCH --array=0-5%6", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB",
                 "#SBATCH --time=600", "#SBATCH --partition=gpu", "#SBATCH --account=rl",
                 "#SBATCH --job-name=slacjax", "#SBATCH --signal=USR2@300",
                 f"#SBATCH --chdir={os.getcwd()}",
                 f"#SBATCH --output={logs}/%A_%a_0_log.out",
                 f"#SBATCH --error={logs}/%A_%a_0_log.err",
                 "export MUJOCO_GL=egl"]:
        assert line in script.splitlines(), (line, script)
    # The job runs this Python (the repository's .venv, on the shared filesystem).
    assert f"{sys.executable} -u -m submitit.core._submit" in script


def test_local_cluster_runs_the_job_elsewhere_and_reports_its_failure(tmp_path):
    """The whole submission path: the job is pickled, started by submitit in another process,
    composes its config there and runs the training entry point, which refuses the occupied
    run dir at once (no JAX compilation). The command fails and shows the job's error."""
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("not a run dir")
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.run", "cluster=local", f"run_dir={occupied}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert f"sweep output dir : {sweep_dir}" in result.stdout
    assert "is not a slacjax run dir" in result.stderr
    errors = list((sweep_dir / "submitit").glob("*/*_0_log.err"))
    assert len(errors) == 1
    assert f"error: run_dir {occupied} is not empty" in errors[0].read_text()
    assert sorted(path.name for path in occupied.iterdir()) == ["notes.txt"]


@pytest.fixture
def restore_signals():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_requeue_signal_stops_the_trainer_first(monkeypatch, restore_signals):
    """Submitit's requeue signal (USR2) takes the trainer's SIGTERM path while it trains, and
    reaches submitit's handler only after the trainer has returned."""
    calls = []
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(("requeue", signum)))
    outside_training = signal.signal(signal.SIGTERM, lambda signum, frame: None)

    requeue = SubmititRequeue()
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(("trainer", signum)))
    os.kill(os.getpid(), signal.SIGUSR2)  # while training
    assert calls == [("trainer", signal.SIGTERM)]
    signal.signal(signal.SIGTERM, outside_training)  # the trainer returned
    requeue.requeue_if_asked()
    assert calls == [("trainer", signal.SIGTERM), ("requeue", signal.SIGUSR2)]


def test_requeue_signal_before_training_goes_to_submitit(monkeypatch, restore_signals):
    calls = []
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(("requeue", signum)))
    SubmititRequeue()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert calls == [("requeue", signal.SIGUSR2)]


def test_requeue_is_inert_outside_submitit(monkeypatch, restore_signals):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    before = signal.getsignal(signal.SIGUSR2)
    requeue = SubmititRequeue()
    assert signal.getsignal(signal.SIGUSR2) is before
    requeue.requeue_if_asked()  # nothing to do
