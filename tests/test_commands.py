"""Commands that explain themselves: --help on each, what a run is doing and how long the
whole of it will take in every phase, a stop within seconds (a background compile is
abandoned, not waited for), checkpoint folders named by env step (old names still resume)."""

import dataclasses
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from experiments import evaluate
from experiments import report as report_module
from experiments import run as run_module
from slacjax import checkpoint, compile_ahead, config, logger, signals
from tests.test_launcher import make_run_dir, smoke_config, started_trainer


def blocks(text: str) -> dict[str, str]:
    """--help's key blocks: {key: its description} (the lines under `  key (type, default …)`)."""
    found, key = {}, None
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and " (" in line:
            key = line.split()[0]
            found[key] = ""
        elif key is not None and line.startswith("      "):
            found[key] += line.strip() + " "
        else:
            key = None
    return found


def test_run_help_describes_every_key_with_its_real_default(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run", "--help"])
    run_module.main()
    text = capsys.readouterr().out
    described = blocks(text)
    keys = ([field.name for field in dataclasses.fields(config.TrainConfig)]
            + [f"agent.{field.name}" for field in dataclasses.fields(config.AgentConfig)]
            + [f"wandb.{field.name}" for field in dataclasses.fields(config.WandbConfig)])
    assert [key for key in keys if not described.get(key, "").strip()] == []
    assert "  agent.batch_sac (int, default 256)" in text  # not `null`
    assert "  agent.decoder_var (float, default 0.1)" in text  # the task's
    assert "  seed (int, default 0)" in text and "preset=check|cpu|smoke" in text
    assert "python -m experiments.run preset=smoke run_dir=/tmp/smoke" in text


def test_evaluate_and_report_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["evaluate", "--help"])
    evaluate.main()
    described = blocks(capsys.readouterr().out)
    keys = [field.name for field in dataclasses.fields(evaluate.EvalConfig)]
    assert [key for key in keys if not described.get(key, "").strip()] == []
    assert report_module.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(report_module.USAGE) and "out=DIR" in text and "Exit status" in text


def test_the_run_eta_is_known_in_collection_once_the_later_steps_are_timed(monkeypatch):
    """Before pretraining and training have rates of their own, their steps as timed by the
    background warm-ups give the whole run's ETA during random collection."""
    clock = [100.0]
    monkeypatch.setattr(logger.time, "monotonic", lambda: clock[0])
    eta = logger.RunEta(update_every=2)
    eta.start("collect", 0)
    clock[0] += 10.0  # 10 agent steps of collection: 1 s each
    left = {"collect": 5, "pretrain": 100, "train": 40}
    assert eta.remaining(10, left) is None
    eta.timed("pretraining", 0.5)
    eta.timed("fused update", 3.0)
    # collection 5 x 1 s, pretraining 100 x 0.5 s, training 40 x (1 s + 3 s / 2)
    assert eta.remaining(10, left) == pytest.approx(5 + 50 + 40 * 2.5)


def test_a_phase_waiting_for_its_compile_says_so_and_a_stop_abandons_it(capsys):
    said = []
    compiler = compile_ahead.PhasePrograms(say=said.append)
    release = threading.Event()
    compiler.submit("pretraining", None, lambda: release.wait(30))
    threading.Timer(1.5, compiler.abandon).start()
    started = time.monotonic()
    try:
        assert compiler.get("pretraining") is False  # abandoned: no waiting for the compile
        assert time.monotonic() - started < 10
        assert said and said[0].startswith("waiting for the background compile of the "
                                            "pretraining step (")
        compiler.close()
    finally:
        release.set()


def test_a_stop_with_nothing_new_exits_at_once_and_leaving_skips_a_running_compile(
        monkeypatch, capsys):
    exits = []
    monkeypatch.setattr(signals.os, "_exit", exits.append)
    with signals.StopRequests(lambda: "the current agent step", lambda: "/r/checkpoints/x",
                              can_save=lambda: False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
    assert exits == [130] and not stop.requested
    assert ("SIGINT: exiting now, with nothing new since the last checkpoint; the next run "
            "resumes from /r/checkpoints/x") in capsys.readouterr().err
    def exit_now(status):
        raise SystemExit(f"os._exit({status})")

    monkeypatch.setattr(compile_ahead, "compiling", lambda: True)
    monkeypatch.setattr(run_module.os, "_exit", exit_now)
    with pytest.raises(SystemExit, match=r"os\._exit\(130\)"):
        run_module.leave(130)  # sys.exit would wait for the compile: os._exit instead


def test_checkpoint_folders_are_named_by_env_step_and_old_names_resume(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "run", checkpoints=2)
    folders = run_dir / "checkpoints"
    assert sorted(path.name for path in folders.iterdir()) == ["000000000_0", "000000000_1"]
    for number in (0, 1):  # the names run dirs written before had
        (folders / f"000000000_{number}").rename(folders / str(number))
    capsys.readouterr()
    trainer_ = started_trainer(smoke_config(run_dir), resume=True)
    try:
        assert f"resumed from {folders / '1'} at env step 0" in capsys.readouterr().out
        trainer_.begin_episodes()
        trainer_.step_envs(np.zeros((1, 6), np.float32), training=False)
        assert trainer_.save_checkpoint() == folders / "000000004_2"
    finally:
        trainer_.close()
    assert sorted(path.name for path in folders.iterdir()) == ["000000004_2", "1"]
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        assert checkpoints.numbers() == [1, 2] and checkpoints.meta(1)["counters"]["env_steps"] == 0
    finally:
        checkpoints.close()
