"""`make`: a task name (slacjax/tasks.py) to a pixel `PixelEnv`.

Only the standard library and the task table load here; the simulators' libraries are
imported inside `make`, after `ensure_gl_backend()` has fixed `MUJOCO_GL`.
"""

from __future__ import annotations

from slacjax import tasks
from slacjax.envs.gl import ensure_gl_backend

RENDER_QUALITIES = ("default", "fast")  # applied in quality.py
OVERRIDE_KEYS = ("action_repeat", "image_size", "render_quality", "camera")


def check_overrides(overrides: dict) -> None:
    """Raises ValueError for an override `make` does not know or a bad render quality."""
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown}; valid: {list(OVERRIDE_KEYS)}")
    render_quality = overrides.get("render_quality", "default")
    if render_quality not in RENDER_QUALITIES:
        raise ValueError(
            f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}"
        )


def make(task: str, seed: int = 0, max_episode_steps: int | None = None, pixels: bool = True,
         **overrides):
    """Builds the Gymnasium env of `task`, seeded with `seed`.

    overrides (defaults from the task table): action_repeat, image_size (64),
    render_quality ('default' = the suite's look; 'fast' = no multisampling, shadows or
    reflections), camera (DMC: id or name; Gymnasium: camera name, None = tracking camera).
    max_episode_steps: a cap on an episode's agent steps (truncation) below the task's own.
    pixels: False never renders (every observation all zeros, no GL context): the same
    dynamics, rewards and episode ends at the physics' speed, for returns alone (baselines).
    Returns a `PixelEnv` (in a `TimeLimit` if capped): observations (image_size, image_size, 3)
    uint8, actions in [-1, 1]^A.
    Raises ValueError for an unknown task (naming the closest) or override.
    """
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    spec = tasks.get_task(task)
    check_overrides(overrides)
    settings = dict(
        action_repeat=spec.action_repeat, image_size=64, render_quality="default",
        camera=spec.camera,
    )
    settings.update(overrides)
    ensure_gl_backend()
    from slacjax.envs.pixel_env import PixelEnv, Unrendered

    render_args = (settings["camera"], settings["image_size"], settings["render_quality"])
    if spec.suite == "dmc":
        from slacjax.envs.dmc import DmcSimulator

        simulator = DmcSimulator(spec.domain, spec.task, seed, *render_args)
    else:
        from slacjax.envs.gym_mujoco import GymMujocoSimulator

        simulator = GymMujocoSimulator(spec.domain, seed, *render_args)
    if not pixels:
        simulator = Unrendered(simulator, settings["image_size"])
    env = PixelEnv(simulator, settings["action_repeat"], settings["image_size"], seed)
    if max_episode_steps is None:
        return env
    import gymnasium

    return gymnasium.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
