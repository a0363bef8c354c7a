"""Compiling the phases' steps in a background thread while earlier phases run.

Compiling the pretraining step overlaps the random collection, and the fused step
pretraining (tens of seconds each on a GPU). A warm-up calls the jitted function once on
arguments of its own (copies, so the caller may go on donating the originals), which fills
the function's compilation cache; the phase then calls it as usual and keeps jit's C++
dispatch (an ahead-of-time `Compiled` goes through Python per call: on an H100 that slowed
pretraining from 324 to 243 updates/s). The warm-up's results are dropped.
"""

from __future__ import annotations

import concurrent.futures
import time

import jax


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
