"""Gymnasium MuJoCo tasks (HalfCheetah-v5, Walker2d-v5, Hopper-v5, Ant-v5) as a `Simulator`.

The Gymnasium env runs without a render mode: its state observation is dropped and one
persistent `mujoco.Renderer` draws the pixels. Falls end an episode as `terminated`; the
registered TimeLimit (1,000 env steps) as `truncated`. MuJoCo answers an invalid state by
resetting it with a warning; a step that raised one of those warnings raises PhysicsDiverged,
as dm_control's PhysicsError would.
Import only through `slacjax.envs.make`, which fixes the GL backend before mujoco loads.
"""

from __future__ import annotations

import gymnasium
import mujoco
import numpy as np

from slacjax.envs import gl, quality
from slacjax.envs.pixel_env import PhysicsDiverged

# Every task here has this camera in its XML: it follows the body's centre of mass (the view
# of the older Gymnasium/Gym renderers), so a running agent stays in frame.
TRACKING_CAMERA = "track"
# The warnings dm_control's `check_invalid_state` turns into a PhysicsError.
INVALID_STATE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_BADCTRL,
)


def resolve_camera(model: mujoco.MjModel, camera: int | str | None) -> int:
    """A camera id for `camera`: an id, a name, or None for the tracking camera (or, in a
    model without one, MuJoCo's free camera, -1)."""
    if isinstance(camera, int):
        return camera
    name = TRACKING_CAMERA if camera is None else camera
    camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    if camera_id == -1 and camera is not None:
        raise ValueError(f"the model has no camera named {camera!r}")
    return camera_id


class GymMujocoSimulator:
    """One `gymnasium.make(env_id)` environment, seeded with `seed` at its first reset."""

    def __init__(
        self, env_id: str, seed: int, camera: int | str | None, image_size: int,
        render_quality: str,
    ):
        # The env checker only inspects the state observations, which are dropped here.
        self._env = gymnasium.make(env_id, disable_env_checker=True)
        self._model = self._env.unwrapped.model
        self._data = self._env.unwrapped.data
        self.action_low = self._env.action_space.low.astype(np.float64)
        self.action_high = self._env.action_space.high.astype(np.float64)
        self._camera_id = resolve_camera(self._model, camera)
        self._image_size = image_size
        self._render_quality = render_quality
        self._first_seed = seed
        self._renderer = None  # built at the first render, as in dmc.py

    def reset(self, seed: int | None) -> None:
        if seed is None and self._first_seed is not None:
            seed = self._first_seed
        self._first_seed = None
        self._env.reset(seed=seed)

    def step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        before = [self._data.warning[warning].number for warning in INVALID_STATE_WARNINGS]
        _, reward, terminated, truncated, _ = self._env.step(action)
        raised = [warning.name for warning, count in zip(INVALID_STATE_WARNINGS, before)
                  if self._data.warning[warning].number > count]
        if raised:
            raise PhysicsDiverged(
                f"Physics state is invalid. Warning(s) raised: {', '.join(raised)}")
        return float(reward), bool(terminated), bool(truncated)

    def render(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = self._make_renderer()
            gl.close_at_exit(self)
        self._renderer.update_scene(self._data, camera=self._camera_id)
        return self._renderer.render()  # a new array on every call

    def _make_renderer(self) -> mujoco.Renderer:
        quality.prepare_model(self._model, self._render_quality)  # before the GL context
        renderer = mujoco.Renderer(self._model, height=self._image_size, width=self._image_size)
        quality.prepare_scene_flags(renderer.scene.flags, self._render_quality)
        return renderer

    def close(self) -> None:
        gl.forget_at_exit(self)
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()
