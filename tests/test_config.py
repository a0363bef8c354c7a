"""The launcher's configuration: Hydra overrides, presets, sweeps and validation (in-process)."""

import pytest

from experiments.run import USER_ERRORS, error_line, experiment_config, job_overrides, validate
from slacjax.config import AgentConfig, ExperimentConfig, TrainConfig
from slacjax.tasks import PLANET_TASKS


def test_defaults_are_the_protocol():
    cfg = experiment_config([])
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.task, cfg.env_steps, cfg.collect_env_steps, cfg.replay_capacity) == (
        "cheetah_run", 1_000_000, 10_000, 100_000)
    # The paper's curves: 10,000 env steps at random, i.e. 2,500 agent steps at repeat 4.
    assert (cfg.collect_agent_steps, cfg.collect_steps) == (None, 2_500)
    assert (cfg.pretrain_updates, cfg.eval_every, cfg.eval_episodes) == (100_000, 10_000, 10)
    assert cfg.run_dir == "runs/cheetah_run/seed0"
    assert cfg.wandb.enabled and cfg.wandb.mode == "offline"
    assert cfg.agent_config() == AgentConfig()


def test_task_defaults_and_agent_overrides():
    cfg = experiment_config(["task=walker_walk", "seed=3", "agent.batch_sac=64",
                             "agent.lr_actor=1e-3", "wandb.mode=online"])
    agent = cfg.agent_config()
    assert agent.decoder_var == 0.4  # the task's
    assert (agent.batch_sac, agent.lr_actor) == (64, 1e-3)
    assert cfg.repeat == 2 and cfg.run_dir == "runs/walker_walk/seed3"
    assert cfg.wandb.mode == "online"
    assert experiment_config(["task=walker_walk", "agent.decoder_var=0.2"]).agent_config(
    ).decoder_var == 0.2


def test_smoke_preset_is_tiny_and_overridable():
    cfg = experiment_config(["preset=smoke", "env_steps=240"])
    assert cfg.env_steps == 240
    assert cfg.agent_config().batch_sac <= 8 and cfg.replay_capacity <= 5000
    assert cfg.render_quality == "fast" and cfg.eval_episodes == 1
    assert cfg.run_dir == "runs/smoke/cheetah_run/seed0"  # never a real run's dir


@pytest.mark.parametrize("override, expected", [
    ("foo=1", "Key 'foo' not in 'ExperimentConfig'"),
    ("agent.nope=1", "Key 'nope' not in"),
    ("seed=abc", "could not be converted to Integer"),
    ("overwrite=maybe", "is not a valid bool"),
    ("agent.batch_sac=1.5", "could not be converted to Integer"),
    ("task=cheetah_rn", "Did you mean 'cheetah_run'?"),
    ("env_steps=0", "env_steps must be positive"),
    ("eval_episodes=-2", "eval_episodes must be positive"),
    ("pretrain_updates=-1", "pretrain_updates must be >= 0"),
    ("agent.batch_sac=0", "batch_sac must be positive"),
    ("render_quality=ultra", "render_quality must be default or fast"),
    ("preset=nope", "available: check, cpu, smoke"),
    ("devices=0", "devices must be 'all' or a positive count"),
    ("seed_conv=fast", "seed_conv must be one of grouped, loop, patches"),
    ("devices=some", "devices must be 'all' or a positive count"),
    ("seeds=2 devices=all", "seeds > 1 runs on one device"),
])
def test_bad_overrides_are_one_line(override, expected):
    with pytest.raises(USER_ERRORS) as raised:
        validate(override.split(), multirun=False)
    line = error_line(raised.value)
    assert expected in line
    assert "\n" not in line


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(ValueError) as raised:
        experiment_config(["task=chetah_run"])
    assert "walker_walk" in str(raised.value) and "cheetah_run" in str(raised.value)


def test_collection_counts_and_must_fit_the_budget():
    assert TrainConfig(task="walker_walk", collect_env_steps=1_001).collect_steps == 501
    # The released code's and the PyTorch port's protocol: 10,000 agent steps.
    assert experiment_config(["collect_agent_steps=10000"]).collect_steps == 10_000
    with pytest.raises(ValueError, match="exceeds env_steps"):
        TrainConfig(env_steps=100, collect_agent_steps=50)
    with pytest.raises(ValueError, match="collect_agent_steps must be positive"):
        TrainConfig(collect_agent_steps=0)


def test_multirun_expands_tasks_and_seeds():
    jobs = job_overrides(["task=cheetah_run,walker_walk", "seed=0,1,2"], multirun=True)
    assert len(jobs) == 6
    configs = validate(["task=cheetah_run,walker_walk", "seed=0,1,2"], multirun=True)
    assert {(c.task, c.seed) for c in configs} == {(t, s) for t in ("cheetah_run", "walker_walk")
                                                   for s in range(3)}
    assert len({c.run_dir for c in configs}) == 6


def test_planet6_sweep_is_the_six_planet_tasks():
    configs = validate(["sweep=planet6"], multirun=False)
    assert [c.task for c in configs] == list(PLANET_TASKS)
    with_seeds = validate(["sweep=planet6", "seed=0,1"], multirun=False)
    assert len(with_seeds) == 12


def test_sweep_with_one_run_dir_is_refused():
    with pytest.raises(ValueError, match="share a run_dir"):
        validate(["seed=0,1", "run_dir=/tmp/x"], multirun=True)


def test_identity_ignores_protocol_lengths():
    base = experiment_config([])
    longer = experiment_config(["env_steps=2000000", "log_every=500"])
    other = experiment_config(["agent.batch_sac=128"])
    assert base.identity() == longer.identity()
    assert base.identity() != other.identity()
