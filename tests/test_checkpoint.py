"""Checkpoints: fall back past damaged ones, one-line write failures, no partial files left."""

import errno
import os
import pathlib
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from slacjax import checkpoint


def trees(number: int):
    """A small state and replay whose values name the checkpoint; the replay's frames are
    incompressible, so they make the largest file."""
    rng = np.random.default_rng(number)
    state = {"w": jnp.full((4, 8), float(number)), "step": jnp.int32(number)}
    replay = {"frames": jnp.asarray(rng.integers(0, 256, (8, 16, 16, 3)), jnp.uint8)}
    return state, replay


def abstract_for(meta: dict):
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype),
                        trees(meta["number"]))


@pytest.fixture
def saved(tmp_path):
    """A run dir with checkpoints 0, 1, 2 (opened for writing, keeping 3)."""
    checkpoints = checkpoint.Checkpoints(tmp_path, keep=3, say=pytest.fail)
    for number in range(3):
        checkpoints.save(*trees(number), {"number": number})
    yield checkpoints
    checkpoints.close()


def files(path: pathlib.Path) -> list[pathlib.Path]:
    return sorted((file for file in path.rglob("*") if file.is_file()
                   and file.name != checkpoint.FILES), key=lambda file: file.stat().st_size)


def assert_restored(result, number: int) -> None:
    restored_number, state, replay, meta = result
    assert restored_number == number and meta == {"number": number}
    expected_state, expected_replay = trees(number)
    np.testing.assert_array_equal(state["w"], expected_state["w"])
    np.testing.assert_array_equal(replay["frames"], expected_replay["frames"])


def test_the_newest_restores_when_all_are_intact(saved):
    assert_restored(saved.restore_newest(abstract_for, say=pytest.fail), 2)


def test_a_truncated_then_a_missing_file_fall_back_and_are_set_aside(saved):
    largest = files(saved.path(2))[-1]
    size = largest.stat().st_size - 10
    os.truncate(largest, size)  # orbax alone restores this unnoticed
    relative = largest.relative_to(saved.path(2)).as_posix()
    removed = files(saved.path(1))[0]
    removed.unlink()
    said = []
    assert_restored(saved.restore_newest(abstract_for, say=said.append), 0)
    assert said == [
        f"skipped checkpoint {saved.path(2)}: file {relative} is shorter than recorded ({size} "
        f"of {size + 10} bytes); moved to 2.corrupt",
        f"skipped checkpoint {saved.path(1)}: file "
        f"{removed.relative_to(saved.path(1)).as_posix()} is missing; moved to 1.corrupt"]
    assert saved.numbers() == [0]
    assert (saved.directory / "2.corrupt" / relative).exists()
    assert saved.save(*trees(1), {"number": 1}) == saved.path(1)
    assert_restored(saved.restore_newest(abstract_for, say=pytest.fail), 1)


def test_an_altered_byte_is_found(saved):
    largest = files(saved.path(2))[-1]
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    said = []
    assert_restored(saved.restore_newest(abstract_for, say=said.append), 1)
    assert said == [f"skipped checkpoint {saved.path(2)}: file "
                    f"{largest.relative_to(saved.path(2)).as_posix()}: content differs (same "
                    "size, another CRC-32); moved to 2.corrupt"]


def test_a_damaged_checkpoint_without_a_record_is_skipped_in_a_few_words(saved):
    # Checkpoints written before the records existed: orbax's own errors decide.
    for number in (1, 2):
        (saved.path(number) / checkpoint.FILES).unlink()
    largest = files(saved.path(2))[-1]
    os.truncate(largest, largest.stat().st_size // 2)
    (saved.path(1) / "meta" / "metadata").write_text("{not json")
    said = []
    assert_restored(saved.restore_newest(abstract_for, say=said.append), 0)
    assert len(said) == 2 and all(len(line) < 200 for line in said)
    assert said[0].startswith(f"skipped checkpoint {saved.path(2)}: ")
    assert said[1] == (f"skipped checkpoint {saved.path(1)}: {checkpoint.META_FILE} is "
                       "unreadable (not JSON); moved to 1.corrupt")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> pathlib.Path:
    """One intact checkpoint directory, written once for the damage tests to copy."""
    checkpoints = checkpoint.Checkpoints(tmp_path_factory.mktemp("pristine"), say=pytest.fail)
    path = checkpoints.save(*trees(0), {"number": 0})
    checkpoints.close()
    return path


DAMAGES = {  # cause -> (what is done to the checkpoint's largest file or folder, the words)
    "missing": (lambda file, folder: file.unlink(), r"file {file} is missing"),
    "empty": (lambda file, folder: os.truncate(file, 0),
              r"file {file} is empty \({size} bytes recorded\)"),
    "shorter": (lambda file, folder: file.write_bytes(b"123456789"),  # other bytes, not a cut
                r"file {file} is shorter than recorded \(9 of {size} bytes\)"),
    "longer": (lambda file, folder: file.write_bytes(file.read_bytes() + b"x"),
               r"file {file} has grown \({size_1} bytes, {size} recorded\)"),
    "other content": (lambda file, folder: file.write_bytes(bytes(file.stat().st_size)),
                      r"file {file}: content differs \(same size, another CRC-32\)"),
    "several files": (lambda file, folder: [os.truncate(other, 0) for other in files(folder)],
                      r"file \S+ is empty \(\d+ bytes recorded\); \d+ other files too"),
    "folder emptied": (lambda file, folder: [shutil.rmtree(path) if path.is_dir()
                                             else path.unlink() for path in folder.iterdir()],
                       r"its folder is empty"),
    "every file emptied": (lambda file, folder: [os.truncate(path, 0) for path in
                                                 folder.rglob("*") if path.is_file()],
                           r"every file in it is empty"),
    "record not JSON": (lambda file, folder: (folder / checkpoint.FILES).write_text("{[x"),
                        rf"{checkpoint.FILES} is unreadable \(not JSON\)"),
    "record empty": (lambda file, folder: (folder / checkpoint.FILES).write_text(""),
                     rf"{checkpoint.FILES} is empty"),
}


@pytest.mark.parametrize("cause", DAMAGES)
def test_each_kind_of_damage_is_named(cause, pristine, tmp_path):
    folder = tmp_path / "0"
    shutil.copytree(pristine, folder)
    largest = files(folder)[-1]
    size = largest.stat().st_size
    do, words = DAMAGES[cause]
    do(largest, folder)
    expected = words.format(file=re.escape(largest.relative_to(folder).as_posix()), size=size,
                            size_1=size + 1)
    assert re.fullmatch(expected, checkpoint.damage(folder))


META_DAMAGES = {  # cause -> (what is done to the meta file, the words after its name)
    "missing": (pathlib.Path.unlink, "is missing"),
    "empty": (lambda path: path.write_text(""), "is empty"),
    "not JSON": (lambda path: path.write_text("{not json"), "is unreadable (not JSON)"),
}


@pytest.mark.parametrize("cause", META_DAMAGES)
def test_each_kind_of_meta_damage_is_named_without_a_record(cause, pristine, tmp_path):
    """A checkpoint without a `FILES` record (written before records existed): its meta
    file's own fault, where orbax only says it could not read it."""
    folder = tmp_path / "0"
    shutil.copytree(pristine, folder)
    (folder / checkpoint.FILES).unlink()
    assert checkpoint.damage(folder) is None and checkpoint.meta_damage(folder) is None
    do, words = META_DAMAGES[cause]
    do(folder / checkpoint.META_FILE)
    assert checkpoint.meta_damage(folder) == f"{checkpoint.META_FILE} {words}"


def test_any_intact_checkpoint_restores_by_number(saved):
    os.truncate(files(saved.path(2))[-1], 0)
    state, replay, meta = saved.restore(1, *abstract_for({"number": 1}))
    assert meta == {"number": 1} and replay is not None
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/2 is damaged: file .* "
                       r"is empty \(\d+ bytes recorded\)$"):
        saved.restore(2, *abstract_for({"number": 2}))
    assert saved.numbers() == [0, 1, 2]  # restoring by number moves nothing


def test_an_intact_checkpoint_of_another_shape_is_an_error_not_damage(saved):
    def other_shapes(meta):
        state, replay = abstract_for(meta)
        return {**state, "w": jax.ShapeDtypeStruct((5, 8), jnp.float32)}, replay

    with pytest.raises(checkpoint.CheckpointError, match="checkpoints/2 could not be restored"):
        saved.restore_newest(other_shapes, say=pytest.fail)
    assert saved.numbers() == [0, 1, 2]


def test_a_full_disk_is_one_line_and_leaves_no_partial_files(saved, monkeypatch, capfd):
    async def disk_full(self, item, directory):  # the meta is written after the arrays
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full)
    capfd.readouterr()
    with pytest.raises(checkpoint.CheckpointWriteError) as failed:
        saved.save(*trees(3), {"number": 3})
    assert str(failed.value).startswith(
        f"could not write checkpoint {saved.path(3)}: [Errno 28] No space left on device (")
    assert str(failed.value).endswith(f" MiB free); {saved.path(2)} is intact")
    assert "Traceback" not in "".join(capfd.readouterr())  # orbax's logs are silenced
    assert sorted(path.name for path in saved.directory.iterdir()) == ["0", "1", "2"]
    assert saved.numbers() == [0, 1, 2]
    monkeypatch.undo()
    assert_restored(saved.restore_newest(abstract_for, say=pytest.fail), 2)
    assert saved.save(*trees(3), {"number": 3}) == saved.path(3)


def test_partial_checkpoints_of_a_killed_save_are_removed_when_opened_for_writing(tmp_path):
    partial = tmp_path / checkpoint.CHECKPOINT_DIR / "4.orbax-checkpoint-tmp-1764570000"
    (partial / "state").mkdir(parents=True)
    checkpoint.Checkpoints(tmp_path, read_only=True, say=pytest.fail).close()
    assert partial.exists()
    said = []
    checkpoint.Checkpoints(tmp_path, say=said.append).close()
    assert not partial.exists()
    assert said == [f"removed {partial}, a checkpoint left half-written by a killed run"]


def test_tensorstore_errors_become_a_few_words():
    full = ValueError('RESOURCE_EXHAUSTED: Error writing "frames/0.0.0.0" in OCDBT database: '
                      "Failed to write 10465280 bytes to file 7: No space left on device "
                      "[os_error_code='28']")
    assert checkpoint.os_error_of(full) == "[Errno 28] No space left on device"
    assert checkpoint.os_error_of(RuntimeError("no OS error here")) is None
    try:
        try:
            raise ValueError('OUT_OF_RANGE: Error reading "frames/0.0.0.0" in OCDBT database: '
                             "Requested byte range [0, 614425) is not valid for value of size 1")
        except ValueError as cause:
            raise Exception("Encountered error while reading array index: (slice(0, 50, 1)). "
                            "See full TensorStore details: <bound method …>") from cause
    except Exception as error:  # noqa: BLE001
        assert checkpoint.short_reason(error) == "file truncated (array frames/0.0.0.0)"
    mismatch = ValueError("Requested shape: (3, 3) is not compatible with the stored shape: "
                          "(10, 100). Truncating/padding is disabled. To enable it, set …")
    assert checkpoint.short_reason(mismatch) == ("ValueError: Requested shape: (3, 3) is not "
                                                 "compatible with the stored shape: (10, 100)")
