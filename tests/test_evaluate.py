"""Evaluation side by side: `experiments.evaluate`'s returns do not depend on `envs`; a
multi-seed run dir evaluates each seed, side by side as seed by seed; the trainer's multi-seed
evaluation equals each seed's episodes run alone.

The run dirs hold an untrained agent (started, checkpointed, no update compiled); episodes
are 4 agent steps.
"""

import shutil
import warnings

import numpy as np
import pytest

from experiments import evaluate
from experiments.run import USER_ERRORS, experiment_config
from slacjax import evaluation, trainer
from slacjax.seeding import stream_seed
from tests.test_launcher import make_run_dir, started_trainer

SHORT = ["preset=smoke", "episode_env_steps=16", "replay_capacity=100", "eval_episodes=2",
         "eval_envs=3"]
MODES = ("stochastic", "greedy")


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("one") / "run", *SHORT, checkpoints=2)


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
    # eval_envs: all seeds' episodes together, 3 at a time
    assert evaluation.side_by_side(cfg.seeds * cfg.eval_episodes, cfg.eval_envs) == 3
    trainer_ = started_trainer(cfg, resume=True)
    env = evaluation.make_eval_env(cfg, 3)
    try:
        for greedy in (False, True):
            together = evaluation.evaluate_seeds(  # 4 episodes, batches of 3: seeds mixed
                env, trainer_.steps, trainer_.state.params, trainer_.seeds, trainer_.eval_keys,
                0, cfg.eval_episodes, greedy)
            for index, seed in enumerate(trainer_.seeds):
                streams = [stream_seed(seed, 2, 0, int(greedy), episode) for episode in range(2)]
                keys = evaluation.episode_keys(trainer_.eval_keys[index], streams)
                alone = [evaluation.run_episode(trainer_.episodes.envs[0], trainer_.steps,
                                                trainer_.state.params, index, keys[e], greedy,
                                                stream)[0]
                         for e, stream in enumerate(streams)]
                np.testing.assert_allclose(together[index], alone, rtol=1e-4, atol=1e-5)
    finally:
        env.close()
        trainer_.close()


def test_damaged_checkpoints_and_videos_elsewhere(one_seed, tmp_path, capsys):
    """The latest intact checkpoint is evaluated past a damaged newest one, which
    `checkpoint=N` does not need; videos go to `video_dir` when asked."""
    run_dir = tmp_path / "run"
    shutil.copytree(one_seed, run_dir)
    newest = run_dir / "checkpoints" / "000000000_1"  # <env step>_<number>
    for path in newest.rglob("*"):
        if path.is_file() and path.stat().st_size > 100:
            path.write_bytes(path.read_bytes()[:100])
    media = sorted((run_dir / "media").glob("*")) if (run_dir / "media").exists() else []
    capsys.readouterr()
    run_evaluate(run_dir, episodes=1, envs=1, video=True, video_dir=str(tmp_path / "videos"))
    printed = capsys.readouterr().out
    assert f"skipped checkpoint {newest}" in printed
    assert f"checkpoint {run_dir / 'checkpoints' / '000000000_0'} at env step 0" in printed
    assert len(list((tmp_path / "videos").glob("policy_000000000_*"))) == 2
    assert (sorted((run_dir / "media").glob("*")) if media else []) == media
    with pytest.raises(trainer.LaunchError, match="no checkpoint at env step 3"):
        run_evaluate(run_dir, episodes=1, envs=1, checkpoint=3)


def test_videos_start_no_fork_that_jax_warns_of(one_seed, tmp_path):
    """`video=true video_dir=…`: ffmpeg starts with no Python in a child forked from this
    multithreaded (JAX) process, so Python's and JAX's fork warnings stay silent."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_evaluate(one_seed, episodes=1, envs=2, video=True, video_dir=str(tmp_path))
    assert len(list(tmp_path.glob("policy_000000000_*.mp4"))) == 2
    assert [str(warning.message) for warning in caught if "fork" in str(warning.message)] == []
