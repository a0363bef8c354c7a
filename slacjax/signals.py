"""Ctrl-C and SIGTERM during a run: stop at the next step and checkpoint; a second one exits.

The first signal only records the request (the loop checks it between steps), abandons the
background compiles (`on_request`: XLA cannot stop one, and the next run compiles again),
and says at once what the run finishes before it saves; a second exits on the spot, naming
the checkpoint the next run will resume from. A Ctrl-C where the run has nothing new since
its last checkpoint (`can_save` false: it is being set up, or has just saved) exits on the
spot. Writes go to stderr, which the progress bar shares.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from slacjax import durable

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Installs handlers for SIGINT and SIGTERM while in use (a context manager).

    waiting_for() -> what the run finishes before it can save ("the current update");
    resume_point() -> what a rerun would resume from ("checkpoint …/3 at env step 160");
    abandons() -> the background compile a stop leaves unfinished, or None;
    on_request() is called at the first request; can_save() -> whether there is anything new
    to save (false: a SIGINT exits at once).
    """

    def __init__(self, waiting_for: Callable[[], str], resume_point: Callable[[], str],
                 abandons: Callable[[], str | None] = lambda: None,
                 on_request: Callable[[], None] = lambda: None,
                 can_save: Callable[[], bool] = lambda: True):
        self.waiting_for = waiting_for
        self.resume_point = resume_point
        self.abandons = abandons
        self.on_request = on_request
        self.can_save = can_save
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
        # SIGTERM always saves: SLURM's and submitit's stop, whose requeue follows the save.
        if self.signum is None and (signum != signal.SIGINT or self.can_save()):
            self.signum = signum
            abandoned = self.abandons()
            self.on_request()
            then = ("" if abandoned is None else
                    f"; {abandoned} is abandoned (the next run compiles it again)")
            _say(f"{name}: stopping after {self.waiting_for()}, then saving a checkpoint{then} "
                 "(send it again to exit at once)")
            return
        if self.signum is None:
            _say(f"{name}: exiting now, with nothing new since the last checkpoint; the next "
                 f"run resumes from {self.resume_point()}")
        else:
            _say(f"{name} again: exiting now without a new checkpoint; the next run resumes "
                 f"from {self.resume_point()}")
        durable.discard_partials()
        sys.stdout.flush()
        os._exit(128 + signum)


def _say(line: str) -> None:
    print(f"\n{line}", file=sys.stderr, flush=True)
