"""Compiling the phases' steps in a background thread while earlier phases run.

Compiling the pretraining step overlaps the random collection, and the fused step
pretraining (tens of seconds each on a GPU). A warm-up calls the jitted function once on
arguments of its own (copies, so the caller may go on donating the originals), which fills
the function's compilation cache; the phase then calls it as usual and keeps jit's C++
dispatch (an ahead-of-time `Compiled` goes through Python per call: on an H100 that slowed
pretraining from 324 to 243 updates/s). The warm-up's results are dropped. `PhasePrograms`
names the warm-ups by the phase that waits for them, so a stop request can say what it waits
for.
"""

from __future__ import annotations

import concurrent.futures
import time

import jax

from slacjax.config import ExperimentConfig
from slacjax.steps import Steps

# The background compile each phase waits for before its first step.
PHASE_PROGRAMS = {"pretrain": ("pretraining",), "train": ("fused update",)}
# What a stop request waits for where no compile holds the phase up.
PHASE_STEP_NAMES = {"pretrain": "the current pretraining dispatch",
                    "train": "the current agent step"}


class AheadOfTime:
    def __init__(self):
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="slacjax-compile")
        self.programs: dict[str, tuple[concurrent.futures.Future, float]] = {}

    def submit(self, name: str, jitted, *args) -> None:
        """Warms `jitted(*args)` up; pass arguments as the phase will (positional and keyword
        arguments are cached apart), arrays that nothing else donates."""
        future = self.pool.submit(lambda: jax.block_until_ready(jitted(*args)) and None)
        self.programs[name] = (future, time.monotonic())

    def get(self, name: str) -> None:
        """Waits for `name`'s warm-up, if one was submitted (raises what it raised)."""
        if name in self.programs:
            self.programs[name][0].result()

    def running(self, names=None) -> str | None:
        """'the background compile of the <name> step (12 s so far)' for a warm-up in
        progress (among `names`, default all), else None."""
        for name, (future, started) in self.programs.items():
            if future.running() and (names is None or name in names):
                seconds = time.monotonic() - started
                return f"the background compile of the {name} step ({seconds:.0f} s so far)"
        return None

    def close(self) -> None:
        """Drops warm-ups not yet started and waits for one still compiling (XLA cannot stop
        a compile; the interpreter would wait for its thread at exit anyway)."""
        running = self.running()
        if running:
            print(f"waiting for {running} to finish before exiting", flush=True)
        self.pool.shutdown(wait=True, cancel_futures=True)


class PhasePrograms(AheadOfTime):
    """The warm-ups of the steps of the phases still to come, by the phase that waits."""

    def submit_phases(self, phase: str, steps: Steps, state, replay, cfg: ExperimentConfig,
                      pretrain_per_dispatch: int) -> None:
        """Starts compiling the steps of `phase` and the phases after it."""
        replay = steps.copy(replay)  # one copy for both: the steps read it, never donate it
        if phase in ("collect", "pretrain") and cfg.pretrain_updates > 0:
            self.submit("pretraining", steps.pretrain, steps.copy(state), replay,
                        pretrain_per_dispatch)
        if phase != "done":
            self.submit("fused update", steps.train, steps.copy(state), replay,
                        cfg.updates_per_step)

    def waiting_for(self, phase: str) -> str:
        """What a stop request in `phase` waits for before its checkpoint: the compile the
        phase is blocked on, else the phase's current step."""
        return (self.running(PHASE_PROGRAMS.get(phase, ()))
                or PHASE_STEP_NAMES.get(phase, "the current env step"))

    def waits_after(self, phase: str) -> str | None:
        """A compile for a later phase than `phase`, which `close` waits for after the
        checkpoint."""
        needed = PHASE_PROGRAMS.get(phase, ())
        return self.running([name for name in self.programs if name not in needed])
