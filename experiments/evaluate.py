"""Run a trained policy: `python -m experiments.evaluate run_dir=PATH episodes=10 video=true`.

Loads the latest checkpoint of a run dir (or `checkpoint=N`: the newest one at env step N),
runs `episodes` episodes with the stochastic policy (the paper's metric) and as many with the
greedy one (tanh of the mean), prints both returns, and with `video=true` writes the first
episode of each as `<run_dir>/media/policy_<env step>_<policy>.mp4` (a GIF where no ffmpeg
backend is installed). Bad input is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import typing

from experiments.run import REPO_DIR, USER_ERRORS, error_line, fail

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_DIR / ".jax_cache"))

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import MISSING, OmegaConf  # noqa: E402


@dataclasses.dataclass
class EvalConfig:
    run_dir: str = MISSING
    episodes: int = 10
    video: bool = False
    checkpoint: typing.Optional[int] = None  # an env step; None = the latest checkpoint
    seed: int = 0  # of the evaluation episodes (the run's own seed is in its config)

    def __post_init__(self):
        if self.episodes <= 0:
            raise ValueError(f"episodes must be positive, got {self.episodes}")


ConfigStore.instance().store(name="eval_schema", node=EvalConfig)


def parse(overrides: list[str]) -> EvalConfig:
    with hydra.initialize(config_path=None, version_base="1.3"):
        return OmegaConf.to_object(hydra.compose("eval_schema", overrides=overrides))


def pick_checkpoint(checkpoints, env_step: int | None) -> int:
    """The latest checkpoint, or the newest one taken at `env_step`."""
    from slacjax.trainer import LaunchError

    numbers = checkpoints.numbers()
    if not numbers:
        raise LaunchError(f"no checkpoint in {checkpoints.directory}")
    if env_step is None:
        return numbers[-1]
    steps = {number: checkpoints.meta(number)["counters"]["env_steps"] for number in numbers}
    matching = [number for number in numbers if steps[number] == env_step]
    if not matching:
        raise LaunchError(f"no checkpoint at env step {env_step}; there are checkpoints at env "
                          f"steps {sorted(set(steps.values()))}")
    return matching[-1]


def evaluate(eval_cfg: EvalConfig) -> None:
    import jax

    from slacjax import checkpoint, episodes, plots, trainer

    run_dir = pathlib.Path(eval_cfg.run_dir).expanduser().resolve()
    if not (run_dir / trainer.CONFIG_FILE).exists():
        raise trainer.LaunchError(f"{run_dir} is not a slacjax run dir (no {trainer.CONFIG_FILE})")
    cfg = trainer.load_config(run_dir)
    if not (run_dir / checkpoint.CHECKPOINT_DIR).exists():
        raise trainer.LaunchError(f"no checkpoint in {run_dir / checkpoint.CHECKPOINT_DIR}")
    trainer.ensure_gl()
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        agent_cfg = cfg.agent_config()
        try:
            number = pick_checkpoint(checkpoints, eval_cfg.checkpoint)
            action_dim = int(checkpoints.meta(number)["action_dim"])
            state, _, meta = checkpoints.restore(number,
                                                 trainer.abstract_state(agent_cfg, action_dim))
        except (checkpoint.CheckpointError, KeyError, TypeError, ValueError) as error:
            raise trainer.LaunchError(str(error)) from error
        env = trainer.make_env(cfg)
        env_step = meta["counters"]["env_steps"]
        print(f"{cfg.task}: checkpoint {checkpoints.path(number)} at env step {env_step}",
              flush=True)
        key = jax.random.PRNGKey(eval_cfg.seed)
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            returns = []
            for episode in range(eval_cfg.episodes):
                reset_seed = trainer.stream_seed(eval_cfg.seed, 3, int(greedy), episode)
                total, frames = episodes.run_episode(
                    env, state.params, agent_cfg, jax.random.fold_in(key, reset_seed), greedy,
                    reset_seed, record=eval_cfg.video and episode == 0)
                returns.append(total)
                if frames:
                    media = run_dir / trainer.MEDIA_DIR
                    media.mkdir(exist_ok=True)
                    path = plots.write_video(np.stack(frames),
                                             media / f"policy_{env_step:09d}_{mode}.mp4")
                    print(f"video: {path}", flush=True)
            print(f"{mode} return: {np.mean(returns):.1f} ± {np.std(returns):.1f} over "
                  f"{len(returns)} episodes", flush=True)
        env.close()
    finally:
        checkpoints.close()


def main() -> None:
    try:
        eval_cfg = parse(sys.argv[1:])
    except USER_ERRORS as error:
        fail(error_line(error))
    from slacjax.trainer import LaunchError

    try:
        evaluate(eval_cfg)
    except LaunchError as error:
        fail(str(error))


if __name__ == "__main__":
    main()
