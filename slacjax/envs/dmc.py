"""DeepMind Control Suite tasks as a `Simulator` (see pixel_env.py).

Import only through `slacjax.envs.make`, which fixes the GL backend before dm_control loads.
"""

from __future__ import annotations

import logging

import numpy as np
from dm_control import suite
from dm_control.mujoco import engine
from dm_control.rl import control

from slacjax.envs import gl, quality
from slacjax.envs.pixel_env import PhysicsDiverged


class _NoSettotalmassWarning(logging.Filter):
    """MuJoCo ≥ 3.3 deprecates the `settotalmass` compiler attribute, which the suite's own
    cheetah.xml uses, and dm_control passes the warning to absl at every load: nothing a
    user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "attribute 'settotalmass' is deprecated" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoSettotalmassWarning())


class DmcSimulator:
    """One `suite.load(domain, task, task_kwargs={'random': seed})` environment.

    Seeding matches a raw suite env: `make(seed=s)` then `reset()` gives the episode that
    `suite.load(..., task_kwargs={'random': s})` then `reset()` gives; `reset(seed=s)` reseeds
    the task's generator, so it starts that same episode again.
    The suite's time limit (1,000 env steps for the benchmark tasks) ends an episode with
    discount 1, reported as truncated; a task's own termination (discount 0) as terminated.
    """

    def __init__(
        self, domain: str, task: str, seed: int, camera: int | str, image_size: int,
        render_quality: str,
    ):
        self._env = suite.load(domain, task, task_kwargs={"random": seed})
        spec = self._env.action_spec()
        self.action_low = np.broadcast_to(np.asarray(spec.minimum, np.float64), spec.shape)
        self.action_high = np.broadcast_to(np.asarray(spec.maximum, np.float64), spec.shape)
        self._camera_id = camera
        self._image_size = image_size
        self._render_quality = render_quality
        # Built at the first render: an env that never renders (the spaces-only copy an
        # AsyncVectorEnv builds in the parent process) then never makes a GL context.
        self._camera = None

    def reset(self, seed: int | None) -> None:
        if seed is not None:
            self._env.task.random.seed(seed)
        self._env.reset()

    def step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        try:
            time_step = self._env.step(action)
        except control.PhysicsError as error:
            raise PhysicsDiverged(" ".join(str(error).split())) from None
        ended = time_step.last()
        terminated = ended and time_step.discount == 0.0
        return float(time_step.reward), terminated, ended and not terminated

    def render(self) -> np.ndarray:
        if self._camera is None:
            self._camera = self._make_camera()
            gl.close_at_exit(self)
        # Camera.render returns a flipped view of its reused buffer: copy before the next frame.
        return self._camera.render().copy()

    def _make_camera(self) -> engine.Camera:
        """One persistent camera: `physics.render()` would rebuild its scene on every call."""
        physics = self._env.physics
        quality.prepare_model(physics.model, self._render_quality)  # before the GL context
        camera = engine.Camera(
            physics, height=self._image_size, width=self._image_size, camera_id=self._camera_id
        )
        quality.prepare_scene_flags(camera.scene.flags, self._render_quality)
        return camera

    def close(self) -> None:
        """Frees the GL context now rather than at garbage collection; unusable afterwards."""
        gl.forget_at_exit(self)
        self._camera = None
        self._env.physics.free()
