"""Faults injected where a run dir can lose data or end in a traceback: each ends in one line
(or works), with no row, checkpoint or artefact lost or left half-written.

Rows are as durable as checkpoints; nothing is deleted without overwrite=true; every
artefact is written whole or not at all; every damaged checkpoint is passed over for the
newest intact one, in training and evaluation alike; bad input is refused before anything is
created. The run dirs hold an untrained smoke agent (started and checkpointed, no update
compiled); other faults are tried on tiny files.
"""

import ctypes
import errno
import json
import os
import shutil
import sys
import threading

import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from experiments import evaluate
from experiments import report as report_module
from experiments.run import USER_ERRORS, error_line, validate
from slacjax import checkpoint, logger, plots, run_state, trainer
from slacjax import run_dir as run_dir_lib
from tests.test_checkpoint import abstract_for, trees
from tests.test_launcher import (
    SMOKE,
    assert_refused,
    make_run_dir,
    run_here,
    smoke_config,
    started_trainer,
)
from tests.test_report import known_returns, write_run


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A smoke run dir with two checkpoints of the untrained agent, at env step 0."""
    return make_run_dir(tmp_path_factory.mktemp("faults") / "run", checkpoints=2)


@pytest.fixture
def run_copy(saved_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(saved_run, copy)
    return copy


def rows_of(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# ------------------------------------------------------------ rows as durable as checkpoints


def test_a_checkpoint_records_rows_only_after_they_are_synced(tmp_path, monkeypatch):
    log = logger.MetricsLog(tmp_path)
    for step in range(3):
        log.write({"phase": "collect", "env_step": step})
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))
    recorded = log.synced()
    assert str(log.path) in synced
    assert recorded.count == 3
    assert [json.loads(line)["env_step"] for line in recorded.tail] == [0, 1, 2]


def rows_and_record(directory, count: int, last_phase: str = "train"):
    """`count` rows (the last of phase `last_phase`) and what a checkpoint records of them."""
    log = logger.MetricsLog(directory)
    for step in range(count):
        phase = last_phase if step == count - 1 else "train"
        row = {"phase": phase, "env_step": 1000 * step, "loss": 0.5 + step}
        if phase == "eval":
            row.update(return_stochastic=10.0, return_stochastic_std=1.0, return_greedy=12.0,
                       return_greedy_std=1.0, returns_stochastic=[9.0, 11.0])
        log.write(row)
    return log.synced()


def test_a_torn_final_evaluation_row_is_redone_from_the_checkpoint(tmp_path, capsys):
    """The last row, an evaluation, is cut by a fault after the checkpoint counted it: the
    resume puts it back whole (one line says so), and the report finds the evaluation."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("task: cheetah_run\nseed: 0\n")
    recorded = rows_and_record(run_dir, 8, last_phase="eval")
    path = run_dir / logger.METRICS_FILE
    whole = path.read_bytes()
    os.truncate(path, len(whole) - len(rows_of(path)[-1]) // 2)
    logger.MetricsLog(run_dir).truncate(recorded.count, recorded.tail)
    assert capsys.readouterr().out == (f"{path} held 7 of the 8 rows the checkpoint recorded, "
                                       "line 8 half-written: restored row 8 from the "
                                       "checkpoint\n")
    assert path.read_bytes() == whole
    assert report_module.main([str(run_dir), f"out={tmp_path / 'report'}"]) == 0


def test_a_deleted_metrics_file_is_said_in_one_line_and_put_back(tmp_path, capsys):
    recorded = rows_and_record(tmp_path, 40)
    path = tmp_path / logger.METRICS_FILE
    whole = rows_of(path)
    path.unlink()
    log = logger.MetricsLog(tmp_path)
    log.truncate(recorded.count, recorded.tail)
    assert capsys.readouterr().out == (
        f"{path} is missing (40 rows recorded): restored rows 9-40 from the checkpoint; rows "
        f"1-8 could not be restored (the checkpoint keeps the last {logger.TAIL_ROWS} only)\n")
    assert rows_of(path) == whole[8:] and log.rows_written == 32


def test_rows_a_checkpoint_counted_survive_a_resume_from_it(run_copy, capsys):
    """The trainer's own checkpoint records its rows; a resume puts back the last one, cut
    after the checkpoint, and removes what a writer killed mid-write left."""
    cfg = smoke_config(run_copy)
    trainer_ = started_trainer(cfg, resume=True)
    try:
        trainer_.begin_episodes()
        for _ in range(10):  # 40 env steps: rows at 20 and 40
            trainer_.step_envs(np.zeros((1, 6), np.float32), training=False)
        trainer_.save_checkpoint()
    finally:
        trainer_.close()
    path = run_copy / logger.METRICS_FILE
    whole = path.read_bytes()
    assert len(rows_of(path)) == 2
    os.truncate(path, len(whole) - 5)
    leftover = run_copy / "media" / ".reconstruction.png.12345.partial"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"half a picture")
    capsys.readouterr()
    trainer_ = started_trainer(cfg, resume=True)
    trainer_.close()
    printed = capsys.readouterr().out
    assert (f"{path} held 1 of the 2 rows the checkpoint recorded, line 2 half-written: "
            "restored row 2 from the checkpoint") in printed.splitlines()
    assert path.read_bytes() == whole
    assert not leftover.exists()


# ------------------------------------------------------------- nothing deleted without overwrite


def config_only_run_dir(run_dir):
    run_dir.mkdir(parents=True)
    run_dir_lib.save_config(smoke_config(run_dir), run_dir)
    return run_dir


def test_damaged_checkpoints_set_aside_are_never_cleared_by_a_rerun(tmp_path):
    """Every checkpoint was damaged and set aside by an earlier rerun: the same command again
    is refused, naming what is there and the two ways on, and deletes nothing."""
    run_dir = config_only_run_dir(tmp_path / "run")
    for name in ("2.corrupt", "3.corrupt"):
        (run_dir / "checkpoints" / name / "meta").mkdir(parents=True)
    rows_and_record(run_dir, 8)
    before = sorted(path.relative_to(run_dir) for path in run_dir.rglob("*"))
    for _ in range(2):
        with pytest.raises(run_dir_lib.LaunchError) as refused:
            run_dir_lib.open_run_dir(smoke_config(run_dir), say=pytest.fail)
        assert str(refused.value) == (
            f"run dir {run_dir} has no checkpoint that restores, only damaged ones set aside "
            "(2.corrupt, 3.corrupt in checkpoints/) and 8 rows of metrics; pass overwrite=true "
            "to start over there (deleting it all), or choose another run_dir")
        assert sorted(path.relative_to(run_dir) for path in run_dir.rglob("*")
                      if path.name != ".slacjax.lock") == before


def test_an_empty_config_is_named_not_taken_for_another_run(tmp_path):
    run_dir = config_only_run_dir(tmp_path / "run")
    (run_dir / "config.yaml").write_text("")
    with pytest.raises(run_dir_lib.LaunchError) as refused:
        run_dir_lib.open_run_dir(smoke_config(run_dir), say=pytest.fail)
    assert str(refused.value).startswith(f"cannot read {run_dir / 'config.yaml'}: the file is "
                                         "empty; pass overwrite=true to start over there")


# ------------------------------------------------------------------- artefacts whole or absent


def test_a_picture_that_does_not_fit_leaves_nothing_and_says_so(tmp_path, monkeypatch):
    from slacjax import durable

    def half_then_full(self, target, **kwargs):
        with open(target, "wb") as file:
            file.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots.plt.Figure, "savefig", half_then_full)
    with pytest.raises(durable.WriteError, match=rf"^could not write {tmp_path / 'a.png'}: "
                                                 r"\[Errno 28\] No space left on device \("):
        plots.save(plots.plt.figure(), tmp_path / "a.png")

    def gif_half_then_full(target, frames, **kwargs):
        with open(target, "wb") as file:
            file.write(b"GIF89a")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots.iio, "imwrite", gif_half_then_full)
    with pytest.raises(durable.WriteError, match=r"\[Errno 28\] No space left on device"):
        plots.write_gif(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "b.gif")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def ffmpeg_out_of_space(tmp_path, monkeypatch):
    """An ffmpeg that writes 4,096 bytes, then fails on the trailer as on a full disk."""
    fake = tmp_path / "ffmpeg"
    fake.write_text('#!/bin/sh\nfor last; do :; done\ncat > /dev/null\n'
                    'head -c 4096 /dev/zero > "$last"\n'
                    'echo "[out#0/mp4 @ 0x1] Error writing trailer of $last: No space left on '
                    'device" >&2\nexit 228\n')
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))


def test_a_video_on_a_full_disk_is_an_error_and_leaves_no_file(run_copy, ffmpeg_out_of_space):
    from slacjax import durable

    with pytest.raises(durable.WriteError) as failed:
        evaluate.evaluate(evaluate.EvalConfig(run_dir=str(run_copy), episodes=1, envs=1,
                                              video=True))
    video = run_copy / "media" / "policy_000000000_stochastic.mp4"
    assert str(failed.value).startswith(
        f"could not write {video}: ffmpeg exited with status 228: Error writing trailer of the "
        "file: No space left on device (")
    assert list((run_copy / "media").iterdir()) == []


def test_evaluate_ends_a_failed_write_or_a_ctrl_c_in_one_line(monkeypatch, capfd, tmp_path):
    from slacjax import durable

    def failing(error):
        def evaluate_(eval_cfg):
            raise error
        return evaluate_

    monkeypatch.setattr(evaluate.signal, "signal", lambda *args: None)  # not this process's
    for error, status, said in (
            (durable.WriteError("could not write /r/media/v.mp4: ffmpeg exited with status 228"),
             1, "error: could not write /r/media/v.mp4: ffmpeg exited with status 228"),
            (KeyboardInterrupt(), 130, "error: interrupted; no video was left half-written")):
        monkeypatch.setattr(evaluate, "evaluate", failing(error))
        monkeypatch.setattr(sys, "argv", ["evaluate", f"run_dir={tmp_path}"])
        capfd.readouterr()
        with pytest.raises(SystemExit) as exited:
            evaluate.main()
        assert exited.value.code == status
        assert capfd.readouterr().err == said + "\n"


def test_a_ctrl_c_that_c_code_drops_is_raised_again_unprinted(monkeypatch):
    """A KeyboardInterrupt raised in a simulator's callback through ctypes is printed and
    dropped there (the evaluation would go on): it is raised again, 0.1 s later and at the
    next policy call, and nothing is printed."""
    stop = evaluate.StopRequest()
    stop.making_envs = True
    printed, timers = [], []
    monkeypatch.setattr(evaluate.signal, "setitimer", lambda which, seconds: timers.append(seconds))
    hook = stop.raise_dropped_again(printed.append)
    callback = ctypes.CFUNCTYPE(None)(lambda: stop.handle(2, None))
    monkeypatch.setattr(sys, "unraisablehook", hook)
    callback()
    assert stop.requested and timers == [0.1] and printed == []
    act = evaluate.stopping(lambda *args: "action")
    monkeypatch.setattr(evaluate, "STOP", stop)
    with pytest.raises(KeyboardInterrupt):
        act()
    stop.requested = False
    assert act() == "action"


def test_a_write_that_fails_in_training_is_one_line_and_exit_1(tmp_path, monkeypatch, capfd):
    from slacjax import durable

    def full_disk(self, resume, compile_ahead=True):
        raise durable.write_error(tmp_path / "run" / "metrics.jsonl", "[Errno 28] No space left "
                                                                      "on device")

    monkeypatch.setattr(trainer.Trainer, "start", full_disk)
    result = run_here(monkeypatch, capfd, *SMOKE, f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert_refused(result, "could not write", "No space left on device", "MiB free)",
                   "no checkpoint was written yet")


class _FailedWriter(threading.Thread):
    """One of orbax's writer threads after its write failed: joining it raises the error."""

    def run(self):
        self.release.wait(10)

    def join(self, timeout=None):
        self.release.set()
        super().join(timeout)
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "step/.zarray": Failed to write 233 '
                         "bytes to file 7: No space left on device [os_error_code='28']")


_FailedWriter.__module__ = "orbax.checkpoint._src.futures.future"


def test_the_first_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_partial_files(
        tmp_path, monkeypatch):
    async def disk_full(self, item, directory):
        writer = _FailedWriter(daemon=True)
        writer.release = threading.Event()
        writer.start()
        raise ValueError("RESOURCE_EXHAUSTED: Error opening \"zarr\" driver: No space left on "
                         "device [os_error_code='28']")

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
    checkpoints = checkpoint.Checkpoints(tmp_path, say=pytest.fail)
    with pytest.raises(checkpoint.CheckpointWriteError) as failed:
        checkpoints.save(*trees(0), {"number": 0})
    checkpoints.close()
    assert str(failed.value).startswith(f"could not write checkpoint {tmp_path}/checkpoints/0: "
                                        "[Errno 28] No space left on device (")
    assert str(failed.value).endswith("MiB free); no earlier checkpoint")
    assert list((tmp_path / "checkpoints").iterdir()) == []


# ------------------------------------------------------------- damaged checkpoints fall back


@pytest.fixture
def two_checkpoints(tmp_path):
    checkpoints = checkpoint.Checkpoints(tmp_path, keep=2, say=pytest.fail)
    for number in range(2):
        checkpoints.save(*trees(number), {"number": number})
    yield checkpoints
    checkpoints.close()


@pytest.mark.parametrize("record, cause", [
    (np.random.default_rng(0).bytes(64) + b"\xff", "not UTF-8 text"),
    (b"[1, 2, 3]", "not a record of file sizes and CRC-32s"),
    (b'{"meta/metadata": "big"}', "not a record of file sizes and CRC-32s"),
], ids=["random bytes", "a list", "a size that is text"])
def test_a_damaged_file_record_falls_back_in_one_line(record, cause, two_checkpoints):
    newest = two_checkpoints.path(1)
    (newest / checkpoint.FILES).write_bytes(record)
    said = []
    number, *_ = two_checkpoints.restore_newest(abstract_for, say=said.append)
    assert number == 0
    assert said == [f"skipped checkpoint {newest}: {checkpoint.FILES} is unreadable ({cause}); "
                    "moved to 1.corrupt"]


def rewrite_meta(path, meta) -> None:
    """Replaces a checkpoint's meta file and records the files anew: damage whose size and
    CRC-32 match their record."""
    (path / checkpoint.META_FILE).write_text(json.dumps(meta))
    sums = checkpoint._file_sums(path)
    (path / checkpoint.FILES).write_text(json.dumps(sums))


WRONG_SHAPES = {  # what a meta of another shape holds -> the cause named
    "not an object": (lambda meta: 7, "a JSON int, not an object"),
    "rows not a list": (lambda meta: {**meta, "log_rows": 5}, "'int' object is not iterable"),
    "no action size": (lambda meta: {key: value for key, value in meta.items()
                                     if key != "action_dim"}, "no 'action_dim'"),
    "a count that is text": (lambda meta: {**meta, "counters": {**meta["counters"],
                                                                "env_steps": "many"}},
                             "counter env_steps is 'many'"),
}


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_counters_of_another_shape_fall_back_in_training_and_evaluation(shape, run_copy,
                                                                         capsys):
    newest = run_copy / "checkpoints" / "000000000_1"  # <env step>_<number>
    checkpoints = checkpoint.Checkpoints(run_copy, read_only=True)
    meta = checkpoints.meta(1)
    checkpoints.close()
    change, cause = WRONG_SHAPES[shape]
    rewrite_meta(newest, change(meta))
    line = f"skipped checkpoint {newest}: {checkpoint.META_FILE} is of another shape ({cause})"
    cfg = run_dir_lib.load_config(run_copy)

    # Evaluation reads without the lock: the damaged one stays in place.
    checkpoints = checkpoint.Checkpoints(run_copy, read_only=True)
    try:
        path, params, env_step, _ = evaluate.restore_params(checkpoints, cfg, None)
    finally:
        checkpoints.close()
    assert capsys.readouterr().out == f"{line}; left in place\n"
    assert path == run_copy / "checkpoints" / "000000000_0" and env_step == 0

    steps = trainer.make_steps(cfg.agent_config(), 6, cfg.seeds)
    checkpoints = checkpoint.Checkpoints(run_copy, say=pytest.fail)
    said = []
    try:
        path, *_ = run_state.restore(checkpoints, steps, 6, cfg, say=said.append)
    finally:
        checkpoints.close()
    assert said == [f"{line}; moved to 000000000_1.corrupt"]
    assert path == run_copy / "checkpoints" / "000000000_0"


# -------------------------------------------------------------- bad input, before anything


@pytest.mark.parametrize("override, expected", [
    ("seed=-1", "seed must be in [0, 4294967295]"),
    ("agent.sequence_length=1", "sequence_length must be at least 2"),
    ("agent.gamma=2", "gamma must be in (0, 1), got 2.0"),
    ("agent.gamma=0", "gamma must be in (0, 1)"),
    ("agent.tau=0", "tau must be in (0, 1]"),
    ("agent.lr_latent=-1", "lr_latent must be positive, got -1.0"),
    ("agent.lr_alpha=0", "lr_alpha must be positive"),
    ("agent.sequence_length=2000", "agent.sequence_length (2000) must be below replay_capacity"),
])
def test_values_out_of_range_are_one_line(override, expected):
    with pytest.raises(USER_ERRORS) as raised:
        validate(["preset=smoke", override], multirun=False)
    assert expected in error_line(raised.value) and "\n" not in error_line(raised.value)


def test_a_bad_seed_creates_nothing(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "new"
    assert_refused(run_here(monkeypatch, capfd, *SMOKE, f"run_dir={run_dir}", "seed=-1"),
                   "seed must be in [0, ")
    assert not run_dir.exists()


def test_a_non_ascii_run_dir_works_unquoted(tmp_path, monkeypatch, capfd):
    from experiments.run import quote_non_ascii

    run_dir = tmp_path / "réglages 日本"
    (job,) = validate(quote_non_ascii([*SMOKE, f"run_dir={run_dir}"]), multirun=False)
    assert job.run_dir == str(run_dir)
    # The user's command: refused for its other, bad, value, not for the path.
    assert_refused(run_here(monkeypatch, capfd, *SMOKE, f"run_dir={run_dir}", "env_steps=0"),
                   "env_steps must be positive")
    assert not run_dir.exists()
    with pytest.raises(USER_ERRORS) as raised:
        validate(quote_non_ascii(["run_dir=/tmp/l'été"]), multirun=False)
    assert "quote the value, e.g. 'run_dir=\"" in error_line(raised.value)


@pytest.fixture
def one_run(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "seed0", "cheetah_run", {0: known_returns(1, 0)})
    return root


def report_fails(arguments, capsys) -> str:
    assert report_module.main([str(argument) for argument in arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: "), error
    return error


def test_report_names_the_wrong_argument_and_exits_2(one_run, tmp_path, capsys, monkeypatch):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    assert f"out={existing} is a file; out= takes a folder" in report_fails(
        [one_run, f"out={existing}"], capsys)
    assert f"out={existing / 'sub'} is inside {existing}, a file" in report_fails(
        [one_run, f"out={existing / 'sub'}"], capsys)
    assert existing.read_text() == "mine"

    default = one_run / "report"
    real_mkdir = type(default).mkdir

    def read_only(self, *args, **kwargs):
        if self == default:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(default), "mkdir", read_only)
    assert (f"cannot write into the default out ({default}, in the first PATH): [Errno 30] "
            "Read-only file system; pass out=DIR") in report_fails([one_run], capsys)
    monkeypatch.undo()

    config = one_run / "seed0" / "config.yaml"
    config.write_bytes(np.random.default_rng(0).bytes(200) + b"\x00\xff")
    assert f"cannot read {config}: not YAML text" in report_fails(
        [one_run, f"out={tmp_path / 'out'}"], capsys)



def test_report_counts_seeds_and_names_one_seed_in_two_run_dirs(tmp_path, capsys):
    root = tmp_path / "runs"
    for copy in ("a", "b"):
        write_run(root / copy / "seed0", "cheetah_run", {0: known_returns(1, 0)})
    assert report_module.main([str(root), f"out={tmp_path / 'out'}"]) == 0
    assert capsys.readouterr().err == (
        f"cheetah_run: seed 0 is in 2 run dirs ({root / 'a' / 'seed0'}, {root / 'b' / 'seed0'}); "
        "each is counted as a seed\n")
    assert "| cheetah_run | 4 (4) | 2 (0, 0) |" in (tmp_path / "out" / "report.md").read_text()
