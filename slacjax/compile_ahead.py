"""Compiling the phases' steps in a background thread while earlier phases run.

Compiling the pretraining step overlaps the random collection, and the fused step
pretraining (tens of seconds each on a GPU). A warm-up calls the jitted function once on
arguments of its own (copies, so the caller may go on donating the originals), which fills
the function's compilation cache; the phase then calls it as usual and keeps jit's C++
dispatch (an ahead-of-time `Compiled` goes through Python per call: on an H100 that slowed
pretraining from 324 to 243 updates/s). The warm-up's results are dropped. `PhasePrograms`
names the warm-ups by the phase that waits for them, so a stop request can say what it
abandons.

XLA cannot stop a compile, so a stop request abandons it instead of waiting: the warm-ups
run in a daemon thread, `get` returns at once once `abandon` was called, and a process that
leaves while one compiles ends by `os._exit` (`compiling`), which the same command's next
run does not need: it compiles again (or finds the program in JAX's persistent cache).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Callable

import jax

from slacjax.config import ExperimentConfig
from slacjax.steps import Steps

# The background compile each phase waits for before its first step.
PHASE_PROGRAMS = {"pretrain": ("pretraining",), "train": ("fused update",)}
# What a stop request waits for before its checkpoint, by phase.
PHASE_STEP_NAMES = {"pretrain": "the current pretraining dispatch",
                    "train": "the current agent step"}
_POLL_S = 0.1  # how often `get` looks for an abandon while it waits

_busy_count = 0  # warm-ups under way in this process
_busy_lock = threading.Lock()


def compiling() -> bool:
    """Whether a warm-up is under way (in this process): then leaving by `sys.exit` would
    wait for it (or let XLA's teardown race it), and `os._exit` is the way out."""
    with _busy_lock:
        return _busy_count > 0


def _mark_busy(delta: int) -> None:
    global _busy_count
    with _busy_lock:
        _busy_count += delta


class AheadOfTime:
    """Warm-ups run one after another in a daemon thread, each with a Future and a name."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.programs: dict[str, tuple[concurrent.futures.Future, list[float]]] = {}
        self.abandoned = threading.Event()
        self.thread: threading.Thread | None = None

    def submit(self, name: str, warm_up, jitted, *args) -> None:
        """Warms `jitted(*args)` up by `warm_up(jitted, *args)` (None: one call); pass
        arguments as the phase will (positional and keyword arguments are cached apart),
        arrays that nothing else donates."""
        future, started = concurrent.futures.Future(), []
        self.programs[name] = (future, started)
        call = warm_up or (lambda jitted, *args: jax.block_until_ready(jitted(*args)))
        self.jobs.put((future, started, lambda: call(jitted, *args)))
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="slacjax-compile",
                                           daemon=True)
            self.thread.start()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            future, started, call = job
            if not future.set_running_or_notify_cancel():
                continue
            _mark_busy(+1)
            started.append(time.monotonic())
            try:
                call()
            except BaseException as error:  # noqa: BLE001  (handed to whoever waits)
                future.set_exception(error)
            else:
                future.set_result(None)
            finally:
                _mark_busy(-1)

    def get(self, name: str) -> bool:
        """Waits for `name`'s warm-up, if one was submitted (raises what it raised) -> True,
        or False at once when the warm-ups were abandoned (a stop request)."""
        if name not in self.programs:
            return True
        future = self.programs[name][0]
        while not self.abandoned.is_set():
            try:
                future.result(timeout=_POLL_S)
                return True
            except concurrent.futures.TimeoutError:
                continue
        return False

    def running(self, names=None) -> str | None:
        """'the background compile of the <name> step (12 s so far)' for a warm-up in
        progress (among `names`, default all), else None."""
        for name, (future, started) in self.programs.items():
            if future.running() and started and (names is None or name in names):
                seconds = time.monotonic() - started[0]
                return f"the background compile of the {name} step ({seconds:.0f} s so far)"
        return None

    def abandon(self) -> None:
        """Stops waiting: `get` returns at once, warm-ups not yet started never start, and the
        one compiling is left to the daemon thread (XLA cannot stop it)."""
        self.abandoned.set()
        for future, _ in self.programs.values():
            future.cancel()

    def close(self) -> None:
        """Drops the warm-ups not yet started and lets the thread end after the one it is on,
        without waiting for it."""
        self.abandon()
        if self.thread is not None:
            self.jobs.put(None)


class PhasePrograms(AheadOfTime):
    """The warm-ups of the steps of the phases still to come, by the phase that waits.

    Each warm-up also times one more call of its step, once compiled, and hands the seconds
    per update to `timed(name, seconds)` (the run's ETA before the phase has a rate of its
    own); a phase that has to wait for its compile says so through `say`."""

    def __init__(self, say: Callable[[str], None] = lambda line: None,
                 timed: Callable[[str, float], None] = lambda name, seconds: None):
        super().__init__()
        self.say, self.timed = say, timed

    def submit_phases(self, phase: str, steps: Steps, state, replay, cfg: ExperimentConfig,
                      pretrain_per_dispatch: int) -> None:
        """Starts compiling the steps of `phase` and the phases after it."""
        replay = steps.copy(replay)  # one copy for both: the steps read it, never donate it
        if phase in ("collect", "pretrain") and cfg.pretrain_updates > 0:
            self.submit("pretraining", self.timing("pretraining", pretrain_per_dispatch),
                        steps.pretrain, steps.copy(state), replay, pretrain_per_dispatch)
        if phase != "done":
            self.submit("fused update", self.timing("fused update", cfg.updates_per_step),
                        steps.train, steps.copy(state), replay, cfg.updates_per_step)

    def timing(self, name: str, updates: int):
        """A warm-up of an update step (state, replay, count) -> (state, metrics): compiles
        and runs it, then times one more call on the state it returned (the first donated
        its argument) and reports the seconds per update."""
        def warm_up(jitted, state, replay, count):
            state, _ = jax.block_until_ready(jitted(state, replay, count))
            started = time.monotonic()
            jax.block_until_ready(jitted(state, replay, count))
            self.timed(name, (time.monotonic() - started) / updates)

        return warm_up

    def get(self, name: str) -> bool:
        """As AheadOfTime.get; a wait of over a second is said in one line."""
        future = self.programs[name][0] if name in self.programs else None
        if future is not None and not future.done():
            try:
                future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                running = self.running([name])
                what = running or f"the background compile of the {name} step"
                self.say(f"waiting for {what}; a rerun finds it in JAX's compilation cache")
            except Exception:  # noqa: BLE001  (raised below, by AheadOfTime.get)
                pass
        return super().get(name)

    def waiting_for(self, phase: str) -> str:
        """What a stop request in `phase` waits for before its checkpoint: the phase's current
        step (none, if the phase still waits for its compile: that wait ends at once)."""
        return PHASE_STEP_NAMES.get(phase, "the current env step")

    def waits_after(self, phase: str) -> str | None:
        """The compile a stop request abandons (any phase's), or None."""
        return self.running()
