"""The launcher on several devices (`devices=N`): a run whose update is split over two CPU
devices trains, checkpoints and resumes; device counts that cannot work are refused.

Child processes get two CPU devices from XLA_FLAGS (a process's device count is fixed when JAX
starts). That the sharded update equals the single-device one is tests/test_parallel.py's.
"""

import os

import jax
import numpy as np
import pytest

from slacjax import logger
from tests.helpers import xla_flags
from tests.test_launcher import SMOKE, assert_refused, final_checkpoint, run

TWO_DEVICES = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=2"))


@pytest.mark.slow(150)
def test_two_devices_train_checkpoint_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*SMOKE, "devices=2", f"run_dir={run_dir}"]  # SMOKE: 160 env steps
    first = run("experiments.run", *overrides, "env_steps=140", env=TWO_DEVICES)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "on cpu ×2" in first.stdout and "done: 140 env steps" in first.stdout

    second = run("experiments.run", *overrides, env=TWO_DEVICES)  # raised to 160: resumes
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "done: 160 env steps" in second.stdout
    rows = logger.read_rows(run_dir)
    train = [row for row in rows if row["phase"] == "train"]
    assert train[-1]["env_step"] == 160
    assert all(np.isfinite(row[key]) for row in train for key in ("latent_loss", "critic_loss"))
    assert [row["env_step"] for row in rows if row["phase"] == "eval"] == [140, 160]

    # The checkpoint is an ordinary one: it restores on this process's single device.
    state, _, meta = final_checkpoint(run_dir)
    assert meta["counters"]["phase"] == "done" and int(state.step[0]) > 0
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))


def test_device_counts_that_cannot_work_are_refused(tmp_path):
    run_dir = tmp_path / "run"
    assert_refused(run("experiments.run", *SMOKE, "devices=3", f"run_dir={run_dir}",
                       env=TWO_DEVICES), "devices=3", "1..2")
    assert_refused(run("experiments.run", *SMOKE, "devices=2", "agent.batch_latent=3",
                       f"run_dir={run_dir}", env=TWO_DEVICES),
                   "devices=2", "does not split over 2 devices")
    assert not run_dir.exists()
