"""The run's progress bar and its whole-run ETA, read from the run's counters."""

from __future__ import annotations

from slacjax import logger
from slacjax.config import ExperimentConfig
from slacjax.run_state import Counters


class RunProgress(logger.Progress):
    """The current phase's bar (from `Counters.position` to the phase's total) and the
    whole run's ETA (`logger.RunEta`), which counts agent steps (updates in pretraining)."""

    def __init__(self, cfg: ExperimentConfig):
        super().__init__(cfg.progress)
        self.cfg, self.eta = cfg, logger.RunEta(cfg.update_every, cfg.updates_per_step)

    def start_phase(self, counters: Counters, total: int) -> None:
        """A bar for the current phase, from where it stands to `total`."""
        self.start(counters.phase, counters.position(), total)
        self.eta.start(counters.phase, units_done(counters))

    def advance_run(self, counters: Counters, amount: int) -> None:
        """Moves the bar by `amount` and re-estimates the whole run's time left."""
        self.advance(amount, env_step=counters.env_steps, run_eta=self.eta.remaining(
            units_done(counters), units_left(counters, self.cfg)))


def units_done(counters: Counters) -> int:
    """The current phase's units so far: updates in pretraining, else agent steps."""
    return counters.pretrain_updates if counters.phase == "pretrain" else counters.agent_steps


def units_left(counters: Counters, cfg: ExperimentConfig) -> dict[str, int]:
    """Each phase's units still to do ({phase: count}); training's agent steps at the
    action repeat."""
    c = counters
    train_end = c.agent_steps + -(-max(cfg.env_steps - c.env_steps, 0) // cfg.repeat)
    return dict(collect=max(cfg.collect_steps - c.agent_steps, 0),
                pretrain=cfg.pretrain_updates - c.pretrain_updates,
                train=train_end - max(c.agent_steps, cfg.collect_steps))
