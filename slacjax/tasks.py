"""The per-task table: every task slacjax knows, with its defaults (docs/algorithm.md §6).

One place holds the action repeat, decoder variance and camera of each task; configs,
environments and the launcher all read it through `get_task`. Nothing here imports an
environment library, so looking a task up is cheap and safe before `MUJOCO_GL` is set.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

# Every (domain, task) of dm_control 1.0.50's suite (`dm_control.suite.ALL_TASKS`), listed
# statically so that validating a name does not import dm_control (which fixes the GL backend).
DMC_TASKS = (
    "acrobot_swingup", "acrobot_swingup_sparse", "ball_in_cup_catch", "cartpole_balance",
    "cartpole_balance_sparse", "cartpole_swingup", "cartpole_swingup_sparse", "cartpole_two_poles",
    "cartpole_three_poles", "cheetah_run", "dog_stand", "dog_walk", "dog_trot", "dog_run",
    "dog_fetch", "finger_spin", "finger_turn_easy", "finger_turn_hard", "fish_upright", "fish_swim",
    "hopper_stand", "hopper_hop", "humanoid_stand", "humanoid_walk", "humanoid_run",
    "humanoid_run_pure_state", "humanoid_CMU_stand", "humanoid_CMU_walk", "humanoid_CMU_run",
    "lqr_lqr_2_1", "lqr_lqr_6_2", "manipulator_bring_ball", "manipulator_bring_peg",
    "manipulator_insert_ball", "manipulator_insert_peg", "pendulum_swingup", "point_mass_easy",
    "point_mass_hard", "quadruped_walk", "quadruped_run", "quadruped_escape", "quadruped_fetch",
    "reacher_easy", "reacher_hard", "stacker_stack_2", "stacker_stack_4", "swimmer_swimmer6",
    "swimmer_swimmer15", "walker_stand", "walker_walk", "walker_run",
)
DMC_DOMAINS = ("ball_in_cup", "humanoid_CMU", "point_mass") + tuple(
    sorted({name.split("_")[0] for name in DMC_TASKS})
)
GYM_TASKS = ("HalfCheetah-v5", "Walker2d-v5", "Hopper-v5", "Ant-v5")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Defaults of one task.

    suite: "dmc" or "gym". For DMC, `domain` and `task` name the suite environment; for
    Gymnasium, `domain` is the environment id and `task` is empty. `camera` is the DMC camera
    id (quadruped uses camera 2, as PlaNet/SLAC do) or the Gymnasium camera name (None = default).
    """

    name: str
    suite: str
    domain: str
    task: str
    action_repeat: int = 4
    decoder_var: float = 0.1
    camera: int | str | None = 0

    @property
    def return_range(self) -> tuple[float, float]:
        """Where an episode's return is known to lie: a DMC reward is in [0, 1] per env step
        over 1,000 env steps; Gymnasium's MuJoCo returns are unbounded."""
        return (0.0, 1000.0) if self.suite == "dmc" else (-math.inf, math.inf)


# docs/algorithm.md §6: the six PlaNet-benchmark tasks and the Gymnasium MuJoCo tasks of the SLAC
# paper.
_OVERRIDES = {
    "cheetah_run": dict(action_repeat=4, decoder_var=0.1),
    "walker_walk": dict(action_repeat=2, decoder_var=0.4),
    "ball_in_cup_catch": dict(action_repeat=4, decoder_var=0.04),
    "finger_spin": dict(action_repeat=1, decoder_var=0.1),
    "cartpole_swingup": dict(action_repeat=4, decoder_var=0.1),
    "reacher_easy": dict(action_repeat=4, decoder_var=0.01),
    "HalfCheetah-v5": dict(action_repeat=1, camera=None),
    "Walker2d-v5": dict(action_repeat=4, camera=None),
    "Hopper-v5": dict(action_repeat=2, camera=None),
    "Ant-v5": dict(action_repeat=4, camera=None),
}
_DMC_CAMERAS = {"quadruped": 2}

PLANET_TASKS = (
    "cheetah_run", "walker_walk", "ball_in_cup_catch", "finger_spin", "cartpole_swingup",
    "reacher_easy",
)
ALL_TASKS = DMC_TASKS + GYM_TASKS


def _split_dmc(name: str) -> tuple[str, str]:
    for domain in sorted(DMC_DOMAINS, key=len, reverse=True):
        if name.startswith(domain + "_"):
            return domain, name[len(domain) + 1:]
    raise AssertionError(name)


def get_task(name: str) -> TaskSpec:
    """Looks a task up by name; raises ValueError naming the valid tasks and the closest one."""
    if name in GYM_TASKS:
        return TaskSpec(name=name, suite="gym", domain=name, task="", **_OVERRIDES[name])
    if name in DMC_TASKS:
        domain, task = _split_dmc(name)
        defaults = dict(camera=_DMC_CAMERAS.get(domain, 0))
        defaults.update(_OVERRIDES.get(name, {}))
        return TaskSpec(name=name, suite="dmc", domain=domain, task=task, **defaults)
    close = difflib.get_close_matches(str(name), ALL_TASKS, n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown task {name!r}.{hint} Valid tasks: {', '.join(ALL_TASKS)}"
    )
