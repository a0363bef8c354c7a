"""Episodes side by side in worker processes give the returns of the same episodes run one
after another (same reset seeds, same action keys); an episode cap truncates; a non-finite
action never reaches the simulator."""

import os
import signal

import jax
import numpy as np
import pytest

from slacjax import envs, evaluation
from slacjax.config import AgentConfig
from slacjax.steps import make_steps

TASK = "cartpole_swingup"  # 1 action dim, action repeat 8
CAP = 4  # agent steps per episode: short episodes keep the test fast
SETTINGS = dict(render_quality="fast", max_episode_steps=CAP)
CFG = AgentConfig(batch_sac=2, batch_latent=2)
STEPS = make_steps(CFG, 1, 1)


@pytest.fixture(scope="module")
def params():
    return STEPS.init_state(jax.random.PRNGKey(0)[None]).params


@pytest.mark.parametrize("greedy", [False, True])
def test_episodes_in_workers_equal_episodes_one_after_another(params, greedy):
    seeds = [11, 12, 13]
    keys = evaluation.episode_keys(jax.random.PRNGKey(5), seeds)
    env = envs.make(TASK, seed=0, **SETTINGS)
    alone = [evaluation.run_episode(env, STEPS, params, 0, keys[i], greedy, seed)[0]
             for i, seed in enumerate(seeds)]
    env.close()
    vector = envs.make_vector(TASK, num_envs=3, seed=0, **SETTINGS)
    try:
        together = evaluation.run_episodes(vector, STEPS, params, [0, 0, 0], keys, greedy,
                                           seeds)
    finally:
        vector.close()
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    assert len(set(np.round(alone, 6))) == 3  # distinct seeds, distinct episodes


def test_episode_cap_truncates_and_counts_agent_steps(params):
    env = envs.make(TASK, seed=0, **SETTINGS)
    _, frames = evaluation.run_episode(env, STEPS, params, 0, jax.random.PRNGKey(0), False, 3,
                                       record=True)
    env.close()
    assert len(frames) == CAP + 1  # the reset frame and one per agent step


def test_non_finite_actions_are_stopped_before_the_simulator(params):
    class Recorder:
        """An env that only counts the actions it receives."""
        steps_taken = 0

        def reset(self, seed):
            return np.zeros((64, 64, 3), np.uint8), {}

        def step(self, action):
            self.steps_taken += 1
            return np.zeros((64, 64, 3), np.uint8), 0.0, False, False, {}

    broken = jax.tree.map(lambda leaf: leaf * np.nan, params)
    env = Recorder()
    with pytest.raises(evaluation.NonFiniteAction) as raised:
        evaluation.run_episode(env, STEPS, broken, 0, jax.random.PRNGKey(0), True, 3)
    assert raised.value.agents == [0] and env.steps_taken == 0
    np.testing.assert_array_equal(evaluation.checked(np.ones((2, 1)), [4, 5]), np.ones((2, 1)))
    with pytest.raises(evaluation.NonFiniteAction, match=r"\[5\]"):
        evaluation.checked(np.array([[0.0], [np.inf]]), [4, 5])


def test_run_episodes_refuses_mismatched_seeds(params):
    class TwoEnvs:
        num_envs = 2

    with pytest.raises(ValueError, match="2 envs need 2 agents, keys and reset seeds"):
        evaluation.run_episodes(TwoEnvs(), STEPS, params, [0, 0, 0], evaluation.episode_keys(
            jax.random.PRNGKey(0), [1, 2, 3]), False, [1, 2, 3])


def test_vector_workers_outlive_a_sigint_to_the_process_group():
    # Ctrl-C reaches every process of the group: the trainer saves a checkpoint on SIGINT and
    # then closes its eval workers, which must still be there to close.
    vector = envs.make_vector(TASK, num_envs=2, seed=0, **SETTINGS)
    try:
        vector.reset(seed=[1, 2])
        for process in vector.processes:
            os.kill(process.pid, signal.SIGINT)
        _, rewards, _, _, _ = vector.step(np.zeros((2, 1), np.float32))
        assert rewards.shape == (2,)
    finally:
        vector.close()
    assert all(process.exitcode == 0 for process in vector.processes)
