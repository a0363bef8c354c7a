"""The background warm-up compiles exactly the programs the phases then call: each step's jit
cache grows by one entry over a whole run (a second entry would mean the phase recompiled)."""

import pytest

from experiments.run import experiment_config
from slacjax import trainer
from slacjax.steps import make_steps


@pytest.mark.slow(75)
@pytest.mark.xdist_group("smoke_programs")
def test_phases_reuse_the_programs_warmed_up_in_the_background(tmp_path):
    cfg = experiment_config(["preset=smoke", "env_steps=160", f"run_dir={tmp_path / 'run'}",
                             "wandb.enabled=false", "progress=false"])
    steps = make_steps(cfg.agent_config(), 6, 1)
    before = steps.pretrain._cache_size(), steps.train._cache_size()
    assert trainer.run(cfg) == 0
    after = steps.pretrain._cache_size(), steps.train._cache_size()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
