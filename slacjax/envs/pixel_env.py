"""The Gymnasium environment slacjax trains on: one simulator, seen through 64×64 pixels.

`PixelEnv` owns what is common to every suite: the [-1, 1] action box and its rescaling,
the action repeat (rewards summed, early stop at episode end, only the last frame rendered),
the env-step counters and what a diverged simulation means (the episode is truncated). A
`Simulator` (dmc.py, gym_mujoco.py) owns physics and rendering.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium
import numpy as np


class PhysicsDiverged(Exception):
    """The simulator's state became invalid (NaN/inf) during a step; the message is one line."""


class Simulator(Protocol):
    """One underlying environment, stepped one env step at a time.

    action_low, action_high: (A,) float arrays, the native action bounds (may be unbounded).
    """

    action_low: np.ndarray
    action_high: np.ndarray

    def reset(self, seed: int | None) -> None: ...

    def step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        """One env step with a native action; returns (reward, terminated, truncated).
        Raises PhysicsDiverged; the next call is then `reset`."""

    def render(self) -> np.ndarray:
        """The current frame, a fresh (S, S, 3) uint8 array."""

    def close(self) -> None: ...


# Bounds this wide mean "unlimited" (dm_control's lqr declares ±1e10): no rescaling there.
UNBOUNDED = 1e6


class Unrendered:
    """A simulator whose frames are all zeros: it never renders (`make(pixels=False)`)."""

    def __init__(self, simulator: Simulator, image_size: int):
        self._simulator = simulator
        self.action_low, self.action_high = simulator.action_low, simulator.action_high
        self._frame = np.zeros((image_size, image_size, 3), np.uint8)

    def reset(self, seed: int | None) -> None:
        self._simulator.reset(seed)

    def step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        return self._simulator.step(action)

    def render(self) -> np.ndarray:
        return self._frame

    def close(self) -> None:
        self._simulator.close()


def rescale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Maps an action in [-1, 1]^A (clipped first) to [low, high]; unbounded dims pass as is."""
    action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    bounded = (np.abs(low) < UNBOUNDED) & (np.abs(high) < UNBOUNDED)
    scaled = low + (action + 1.0) * 0.5 * (high - low)
    return np.where(bounded, scaled, action)


class PixelEnv(gymnasium.Env):
    """Pixel observations (S, S, 3) uint8, actions in [-1, 1]^A float32, action repeat inside.

    `info["env_steps"]`: env steps taken by this call (fewer than `action_repeat` when the
    episode ended inside the repeat); `info["episode_env_steps"]`: total in the episode.
    A simulation that diverges (an invalid NaN/inf state: dm_control's PhysicsError, or the
    same MuJoCo warnings under Gymnasium) ends the episode as truncated, not terminated (the
    state is broken, not terminal), that env step earning nothing; `info["physics_error"]`
    says why.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, simulator: Simulator, action_repeat: int, image_size: int, seed: int):
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self._simulator = simulator
        self.action_repeat = action_repeat
        self.observation_space = gymnasium.spaces.Box(
            0, 255, (image_size, image_size, 3), dtype=np.uint8
        )
        num_actions = simulator.action_low.shape[0]
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (num_actions,), dtype=np.float32)
        self.action_space.seed(seed)  # reproducible random-action prefill
        self._episode_env_steps = 0
        self._episode_over = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, int]]:
        super().reset(seed=seed)
        self._simulator.reset(seed)
        self._episode_env_steps = 0
        self._episode_over = False
        return self._simulator.render(), {"env_steps": 0, "episode_env_steps": 0}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, int]]:
        if self._episode_over:
            # dm_control would silently start a new episode here; make the caller reset.
            raise RuntimeError("the episode is over (or never started): call reset() first")
        native = rescale_action(action, self._simulator.action_low, self._simulator.action_high)
        total_reward, env_steps = 0.0, 0
        terminated = truncated = False
        info = {}
        while env_steps < self.action_repeat and not (terminated or truncated):
            env_steps += 1
            try:
                reward, terminated, truncated = self._simulator.step(native)
            except PhysicsDiverged as error:
                truncated, info["physics_error"] = True, str(error)
                break
            total_reward += reward
        self._episode_env_steps += env_steps
        self._episode_over = terminated or truncated
        info.update(env_steps=env_steps, episode_env_steps=self._episode_env_steps)
        return self._simulator.render(), total_reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The current frame, as in the observations (Gymnasium's 'rgb_array' mode)."""
        return self._simulator.render()

    def close(self) -> None:
        self._simulator.close()
