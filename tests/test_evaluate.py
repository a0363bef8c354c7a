"""Evaluation side by side: `experiments.evaluate`'s returns do not depend on `envs`; a
multi-seed run dir evaluates each seed, side by side as seed by seed; the trainer's multi-seed
evaluation equals each seed's episodes run alone.

The run dirs hold an untrained agent (started, checkpointed, no update compiled); episodes
are 4 agent steps.
"""

import shutil

import gymnasium
import numpy as np
import pytest

from experiments import evaluate
from experiments.run import USER_ERRORS, experiment_config
from slacjax import episodes, parallel, trainer
from tests.test_launcher import make_run_dir, start_without_compiling

SHORT = ["preset=smoke", "episode_env_steps=16", "replay_capacity=100", "eval_episodes=2",
         "eval_envs=3"]
MODES = ("stochastic", "greedy")


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("one") / "run", *SHORT)


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("two") / "run", *SHORT, "seeds=2")


def run_evaluate(run_dir, **settings) -> dict:
    return evaluate.evaluate(evaluate.EvalConfig(run_dir=str(run_dir), **settings))


def test_returns_do_not_depend_on_envs(one_seed):
    alone = run_evaluate(one_seed, episodes=3, envs=1, video=True)
    together = run_evaluate(one_seed, episodes=3, envs=2)  # batches of 2: one padded
    for mode in MODES:
        assert together[mode].shape == (1, 3)
        np.testing.assert_allclose(together[mode], alone[mode], rtol=1e-4, atol=1e-5)
    assert len(set(np.round(alone["stochastic"][0], 6))) == 3  # distinct episodes
    videos = sorted(path.name for path in (one_seed / "media").glob("policy_*"))
    assert [name.split(".")[0] for name in videos] == ["policy_000000000_greedy",
                                                       "policy_000000000_stochastic"]


def test_two_seed_run_dir_evaluates_each_seed(two_seeds, capsys):
    # envs=3 with one recorded episode each: both seeds' second episodes in one batch of 2.
    together = run_evaluate(two_seeds, episodes=2, envs=3, video=True)
    lines = capsys.readouterr().out.splitlines()
    for mode in MODES:
        assert sum(line.startswith(f"seed {seed}: {mode} return ") for line in lines
                   for seed in (0, 1)) == 2
        assert any(line.startswith(f"{mode} return: ") and "across 2 seeds" in line
                   for line in lines)
    for seed in (0, 1):
        assert len(list((two_seeds / f"seed{seed}" / "media").glob("policy_*"))) == 2
    seed_by_seed = [run_evaluate(two_seeds, episodes=2, envs=1, seeds=[seed]) for seed in (0, 1)]
    for mode in MODES:
        assert together[mode].shape == (2, 2)
        np.testing.assert_allclose(together[mode],
                                   np.concatenate([alone[mode] for alone in seed_by_seed]),
                                   rtol=1e-4, atol=1e-5)
    assert not np.allclose(together["stochastic"][0], together["stochastic"][1])


def test_bad_evaluation_input_is_refused(two_seeds):
    with pytest.raises(trainer.LaunchError, match=r"seeds \[5\] are not in this run, which "
                                                  r"has seeds 0-1"):
        run_evaluate(two_seeds, seeds=[1, 5])
    for override, expected in (("envs=0", "envs must be positive"),
                               ("seeds=[1,1]", "seeds must be distinct")):
        with pytest.raises(USER_ERRORS, match=expected):
            evaluate.parse([f"run_dir={two_seeds}", override])


def test_trainer_evaluates_seeds_side_by_side_as_seed_by_seed(two_seeds, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(two_seeds, run_dir)
    cfg = experiment_config([*SHORT, "seeds=2", f"run_dir={run_dir}"])
    assert trainer.eval_env_count(cfg) == 3  # eval_envs: all seeds' episodes together
    trainer_ = start_without_compiling(cfg, run_dir, resume=True)
    try:
        for greedy in (False, True):
            together = trainer_.eval_returns(greedy)  # 4 episodes, batches of 3: seeds mixed
            for view, returns in zip(trainer_.views, together):
                streams = [trainer.stream_seed(view.seed, 2, 0, int(greedy), episode)
                           for episode in range(2)]
                keys = episodes.episode_keys(view.eval_key, streams)
                params = parallel.take_seed(trainer_.state.params, view.index)
                alone = [episodes.run_episode(trainer_.envs[0], params, trainer_.agent_cfg,
                                              keys[index], greedy, stream)[0]
                         for index, stream in enumerate(streams)]
                np.testing.assert_allclose(returns, alone, rtol=1e-4, atol=1e-5)
        assert isinstance(trainer_.eval_env, gymnasium.vector.VectorEnv)
        assert trainer_.eval_env.num_envs == 3
    finally:
        trainer_.close()
