"""Ctrl-C and SIGTERM during a run: stop at the next step and checkpoint; a second one exits.

The first signal only records the request (the loop checks it between steps) and says at once
what the run is waiting for; a second exits on the spot, naming the checkpoint the next run
will resume from. Writes go to stderr, which the progress bar shares.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Installs handlers for SIGINT and SIGTERM while in use (a context manager).

    waiting_for() -> what the run finishes before it can save ("the current update");
    resume_point() -> what a rerun would resume from ("checkpoint …/3 at env step 160");
    waits_after() -> what it still waits for after saving, before it exits (a background
    compile), or None.
    """

    def __init__(self, waiting_for: Callable[[], str], resume_point: Callable[[], str],
                 waits_after: Callable[[], str | None] = lambda: None):
        self.waiting_for = waiting_for
        self.resume_point = resume_point
        self.waits_after = waits_after
        self.signum: int | None = None
        self.previous = {}

    def __enter__(self) -> "StopRequests":
        self.previous = {signum: signal.signal(signum, self.handle) for signum in HANDLED}
        return self

    def __exit__(self, *_) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            after = self.waits_after()
            then = "" if after is None else f", then waiting for {after} before exiting"
            _say(f"{name}: stopping after {self.waiting_for()}, then saving a checkpoint{then} "
                 "(send it again to exit at once)")
            return
        _say(f"{name} again: exiting now without a new checkpoint; the next run resumes from "
             f"{self.resume_point()}")
        os._exit(128 + signum)


def _say(line: str) -> None:
    print(f"\n{line}", file=sys.stderr, flush=True)
