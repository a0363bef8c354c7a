"""A run's checkpoints: {TrainState, Replay, meta (counters, config)} via orbax's CheckpointManager.

Checkpoints are numbered 0, 1, 2, … in the order they were written (several can share an env
step: the end of collection, of pretraining, an interrupt), and each one's meta names its env
step. orbax writes each into a temporary directory and renames it when complete, so a killed
run never leaves a half-written checkpoint behind; the last `keep` are kept.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(Exception):
    """A checkpoint that cannot be read back (corrupt, or of another shape)."""


def _with_local_sharding(abstract_tree):
    device = jax.local_devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=sharding), abstract_tree)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class Checkpoints:
    """The `checkpoints/` directory of one run dir."""

    def __init__(self, run_dir: pathlib.Path, keep: int = 2, read_only: bool = False):
        self.directory = pathlib.Path(run_dir).resolve() / CHECKPOINT_DIR
        # read_only: for readers (evaluation, tests) that never save; it only skips creating
        # the directory (orbax's own read-only mode logs warnings on every use).
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only,
            # Saves block: the state is donated to the next update right after a save.
            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def numbers(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest(self) -> int | None:
        numbers = self.numbers()
        return numbers[-1] if numbers else None

    def path(self, number: int) -> pathlib.Path:
        return self.directory / str(number)

    def save(self, state, replay, meta: dict) -> pathlib.Path:
        """Writes checkpoint latest+1 and waits until it is on disk -> its path."""
        number = 0 if self.latest() is None else self.latest() + 1
        self.manager.save(number, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), replay=ocp.args.StandardSave(replay),
            meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()
        return self.path(number)

    def meta(self, number: int) -> dict:
        try:
            restored = self.manager.restore(number, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))
        except Exception as error:  # orbax raises many types for unreadable files
            raise CheckpointError(f"checkpoint {self.path(number)} is unreadable "
                                  f"({_first_line(error)})") from error
        return restored["meta"]

    def restore(self, number: int, abstract_state, abstract_replay=None):
        """-> (state, replay or None, meta); the abstract trees give shapes and dtypes.

        Without `abstract_replay` the replay is not read (evaluation needs the policy only).
        """
        items = dict(state=ocp.args.StandardRestore(_with_local_sharding(abstract_state)),
                     meta=ocp.args.JsonRestore())
        if abstract_replay is not None:
            items["replay"] = ocp.args.StandardRestore(_with_local_sharding(abstract_replay))
        try:
            restored = self.manager.restore(number, args=ocp.args.Composite(**items))
        except Exception as error:  # orbax raises many types for unreadable or mismatched files
            raise CheckpointError(f"checkpoint {self.path(number)} could not be restored "
                                  f"({_first_line(error)})") from error
        return restored["state"], restored.get("replay"), restored["meta"]

    def close(self) -> None:
        self.manager.close()
