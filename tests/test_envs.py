"""Pixel environments: spaces, action repeat, seeding, episode ends, vector envs, GL choice."""

import logging
import subprocess
import sys

import numpy as np
import pytest

from slacjax import envs
from slacjax.envs import gl

FAST = dict(render_quality="fast")


def rollout_frames(task: str, seed: int, num_steps: int) -> np.ndarray:
    """(num_steps + 1, 64, 64, 3) frames under a fixed action sequence."""
    env = envs.make(task, seed=seed, **FAST)
    frames = [env.reset()[0]]
    actions = np.random.default_rng(0).uniform(-1, 1, (num_steps,) + env.action_space.shape)
    frames += [env.step(action)[0] for action in actions]
    env.close()
    return np.stack(frames)


def test_spaces_and_observations():
    env = envs.make("cheetah_run", **FAST)
    assert env.observation_space.shape == (64, 64, 3)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (6,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=0)
    assert info == {"env_steps": 0, "episode_env_steps": 0}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3)
    assert env.observation_space.contains(obs) and obs.std() > 0
    assert isinstance(reward, float) and not terminated and not truncated
    assert info == {"env_steps": 4, "episode_env_steps": 4}
    env.close()


def test_action_repeat_sums_the_raw_dm_control_rewards():
    from dm_control import suite

    seed, action_repeat = 3, 4
    env = envs.make("cartpole_swingup", seed=seed, action_repeat=action_repeat, **FAST)
    raw = suite.load("cartpole", "swingup", task_kwargs={"random": seed})
    env.reset()
    raw.reset()
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 1))
    for action in actions:
        _, reward, _, _, info = env.step(action)
        raw_rewards = [raw.step(action).reward for _ in range(action_repeat)]
        assert reward == pytest.approx(sum(raw_rewards), abs=1e-12)
        assert info["env_steps"] == action_repeat
    env.close()


def test_an_unrendered_env_has_the_rendered_ones_rewards_and_ends():
    seed = 4
    rendered = envs.make("ball_in_cup_catch", seed=seed, max_episode_steps=30, **FAST)
    blind = envs.make("ball_in_cup_catch", seed=seed, max_episode_steps=30, pixels=False)
    frame, _ = blind.reset(seed=seed)
    rendered.reset(seed=seed)
    assert frame.shape == (64, 64, 3) and not frame.any()
    actions = np.random.default_rng(2).uniform(-1, 1, (30, 2))
    for action in actions:
        frame, *outcome = blind.step(action)
        assert outcome == list(rendered.step(action)[1:]) and not frame.any()
    assert outcome[2]  # the cap truncated both at the same step
    rendered.close()
    blind.close()


def test_rescale_action_maps_the_box_and_passes_unbounded_dims():
    from slacjax.envs.pixel_env import rescale_action

    low, high = np.array([-1.0, 0.0, -1e10]), np.array([1.1, 2.0, 1e10])  # quadruped, lqr
    np.testing.assert_allclose(rescale_action(np.array([1.0, -1.0, 0.5]), low, high),
                               [1.1, 0.0, 0.5])
    np.testing.assert_allclose(rescale_action(np.array([5.0, 0.0, -3.0]), low, high),
                               [1.1, 1.0, -1.0])  # clipped to [-1, 1] first


def test_same_seed_same_frames_other_seed_other_frames():
    # reacher_easy draws its arm angles and target position from the seed: visible at once.
    first = rollout_frames("reacher_easy", seed=1, num_steps=3)
    np.testing.assert_array_equal(first, rollout_frames("reacher_easy", seed=1, num_steps=3))
    assert not np.array_equal(first[0], rollout_frames("reacher_easy", seed=2, num_steps=3)[0])


def test_reset_with_a_seed_restarts_that_episode():
    env = envs.make("reacher_easy", seed=5, **FAST)
    fresh = env.reset()[0]
    env.reset()
    np.testing.assert_array_equal(env.reset(seed=5)[0], fresh)
    env.close()


def test_dmc_time_limit_truncates_and_repeat_stops_at_the_limit():
    # 1,000 env steps with a repeat of 300: 300 + 300 + 300 + 100.
    env = envs.make("cartpole_balance", action_repeat=300, **FAST)
    env.reset()
    results = [env.step(np.zeros(1)) for _ in range(4)]
    assert [info["env_steps"] for *_, info in results] == [300, 300, 300, 100]
    assert results[-1][-1]["episode_env_steps"] == 1000
    assert [(terminated, truncated) for _, _, terminated, truncated, _ in results] == [
        (False, False), (False, False), (False, False), (False, True)
    ]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    env.close()


@pytest.mark.parametrize("task", ["cartpole_swingup", "Hopper-v5"])
def test_a_diverging_simulation_truncates_the_episode(task):
    env = envs.make(task, action_repeat=4, **FAST)
    action_dim = env.action_space.shape[0]
    env.reset()
    obs, reward, terminated, truncated, info = env.step(np.full(action_dim, np.nan))
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info == {"physics_error": "Physics state is invalid. Warning(s) raised: "
                    "mjWARN_BADCTRL", "env_steps": 1, "episode_env_steps": 1}
    assert obs.shape == (64, 64, 3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(action_dim))
    env.reset()
    _, reward, terminated, truncated, info = env.step(np.zeros(action_dim))
    assert np.isfinite(reward) and not (terminated or truncated) and "physics_error" not in info
    env.close()


def test_loading_the_cheetah_logs_no_settotalmass_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="absl"):
        envs.make("cheetah_run").close()
    assert not [record for record in caplog.records if "settotalmass" in record.getMessage()]


# Both suites' envs in one process, rendered and alive (never closed) until exit.
BOTH_SUITES = """
from slacjax import envs
kept = [envs.make(task, render_quality="fast") for task in ("Hopper-v5", "cartpole_swingup")]
for env in kept:
    env.reset()
print("made")
"""


def test_envs_of_both_suites_exit_without_tracebacks():
    result = subprocess.run([sys.executable, "-c", BOTH_SUITES], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout == "made\n"
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_unknown_task_and_override_errors():
    with pytest.raises(ValueError, match="Did you mean 'cheetah_run'"):
        envs.make("cheetah_runn")
    with pytest.raises(ValueError, match="unknown override"):
        envs.make("cheetah_run", frame_skip=2)
    with pytest.raises(ValueError, match="render_quality"):
        envs.make("cheetah_run", render_quality="ultra")


def test_gymnasium_hopper_renders_and_falls_terminate():
    env = envs.make("Hopper-v5", seed=0, **FAST)
    obs, _ = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert obs.std() > 10  # not blank: floor, sky and hopper
    for _ in range(500):  # random actions topple the hopper within tens of steps
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["episode_env_steps"] < 1000
    env.close()


def test_make_vector_steps_two_spawned_envs():
    vector = envs.make_vector("cartpole_swingup", num_envs=2, seed=0, **FAST)
    try:
        obs, _ = vector.reset()
        assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8
        obs, rewards, terminated, truncated, _ = vector.step(vector.action_space.sample())
        assert obs.shape == (2, 64, 64, 3) and rewards.shape == (2,)
        assert not terminated.any() and not truncated.any()
    finally:
        vector.close()


def test_gl_failure_names_the_debian_packages(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(gl, "bound_backends", lambda: {})
    monkeypatch.setattr(gl, "probe_backend", lambda backend: f"{backend} is missing")
    with pytest.raises(RuntimeError) as error:
        gl.ensure_gl_backend()
    message = str(error.value)
    assert "libegl1 libegl-mesa0 libgl1-mesa-dri" in message and "libosmesa6" in message
    assert "egl is missing" in message


def test_gl_backend_bound_before_the_choice_is_reported(monkeypatch):
    import mujoco  # noqa: F401  (binds a backend, as an early import in user code would)

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    with pytest.raises(RuntimeError, match="imported before MUJOCO_GL was set"):
        gl.ensure_gl_backend()
    other = "osmesa" if gl.bound_backends()["mujoco"] != "osmesa" else "egl"
    monkeypatch.setenv("MUJOCO_GL", other)
    with pytest.raises(RuntimeError, match="already imported with another OpenGL backend"):
        gl.ensure_gl_backend()


def test_probe_reports_a_broken_backend_without_harming_this_process():
    assert gl.probe_backend("no-such-backend") is not None
