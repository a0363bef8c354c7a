"""Run a trained policy: `python -m experiments.evaluate run_dir=PATH episodes=10 video=true`.

Loads the latest checkpoint of a run dir (or `checkpoint=N`: the newest one at env step N),
runs `episodes` episodes with the stochastic policy (the paper's metric) and as many with the
greedy one (tanh of the mean), prints both returns, and with `video=true` writes the first
episode of each as `<run_dir>/media/policy_<env step>_<policy>.mp4` (a GIF where no ffmpeg
backend is installed). Bad input is one line on stderr and a non-zero exit.

Episodes run side by side in `envs` worker processes, one batched policy call per step (by
default as many as the CPU cores allow; `envs=1`: one after another in this process). Each
episode has its own reset seed and key from (`seed`, policy, episode), so the returns do not
depend on `envs` (up to float rounding); a recorded episode runs in this process.

A multi-seed run dir (`seeds=N` at training) evaluates every seed, or those of `seeds=[a,b]`
(seed values), all seeds' episodes sharing the envs and each policy call: one line per seed,
then the mean ± std across seeds of their mean returns; videos go to `seed<k>/media/`. Every
seed plays the same episodes (reset seeds and keys), so seeds are compared on equal terms.
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
    # Episodes side by side, each env in a worker process (all seeds' episodes share them);
    # 1: one after another in this process. None: as many as the CPU cores allow (cores − 2).
    envs: typing.Optional[int] = None
    # A multi-seed run's seeds to evaluate, by value (e.g. [10,12]); None: all of them.
    seeds: typing.Optional[typing.List[int]] = None

    def __post_init__(self):
        if self.episodes <= 0:
            raise ValueError(f"episodes must be positive, got {self.episodes}")
        if self.envs is not None and self.envs <= 0:
            raise ValueError(f"envs must be positive, got {self.envs}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) < len(self.seeds)):
            raise ValueError(f"seeds must be distinct seed values, at least one, got {self.seeds}")


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


def pick_seeds(cfg, wanted: list[int] | None) -> list[int]:
    """The places (along a multi-seed state's [N] axis) of the run's seeds to evaluate: all of
    them, or those whose values are `wanted`."""
    from slacjax.trainer import LaunchError

    seeds = [cfg.seed + index for index in range(cfg.seeds)]
    if wanted is None:
        return list(range(cfg.seeds))
    missing = [seed for seed in wanted if seed not in seeds]
    if missing:
        held = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        raise LaunchError(f"seeds {missing} are not in this run, which has {held}")
    return [seeds.index(seed) for seed in wanted]


def seed_directory(run_dir: pathlib.Path, cfg, index: int) -> pathlib.Path:
    """Where the run keeps the files of the seed at `index`: the run dir, or `seed<k>/`."""
    return run_dir if cfg.seeds == 1 else run_dir / f"seed{cfg.seed + index}"


def report(mode: str, seeds: list[int] | None, returns: np.ndarray) -> list[str]:
    """The lines printed for one policy: returns [seeds, episodes]; `seeds` None for a
    single-seed run (one line), else one line per seed and one across them."""
    episodes = returns.shape[1]
    if seeds is None:
        return [f"{mode} return: {returns.mean():.1f} ± {returns.std():.1f} over {episodes} "
                "episodes"]
    means = returns.mean(axis=1)
    lines = [f"seed {seed}: {mode} return {row.mean():.1f} ± {row.std():.1f} over {episodes} "
             "episodes" for seed, row in zip(seeds, returns)]
    return lines + [f"{mode} return: {means.mean():.1f} ± {means.std():.1f} across "
                    f"{len(seeds)} seeds ({episodes} episodes each)"]


def restore_state(checkpoints, eval_cfg: EvalConfig, cfg):
    """-> (the checkpoint's number, its TrainState (stacked for a multi-seed run), its meta)."""
    from slacjax import checkpoint, seeds, trainer

    agent_cfg = cfg.agent_config()
    try:
        number = pick_checkpoint(checkpoints, eval_cfg.checkpoint)
        action_dim = int(checkpoints.meta(number)["action_dim"])
        abstract = (trainer.abstract_state(agent_cfg, action_dim) if cfg.seeds == 1
                    else seeds.abstract_states(agent_cfg, action_dim, cfg.seeds))
        state, _, meta = checkpoints.restore(number, abstract)
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError) as error:
        raise trainer.LaunchError(str(error)) from error
    return number, state, meta


def record_first_episode(env, params, agent_cfg, key, greedy: bool, reset_seed: int,
                         path: pathlib.Path) -> float:
    """Plays one episode in this process and writes its video at `path` -> its return."""
    from slacjax import episodes, plots

    total, frames = episodes.run_episode(env, params, agent_cfg, key, greedy, reset_seed,
                                         record=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"video: {plots.write_video(np.stack(frames), path)}", flush=True)
    return total


def evaluate(eval_cfg: EvalConfig) -> dict[str, np.ndarray]:
    """Prints the returns of the run's policies -> {policy: returns [seeds, episodes]}."""
    import jax
    import jax.numpy as jnp

    from slacjax import checkpoint, episodes, parallel, trainer

    run_dir = pathlib.Path(eval_cfg.run_dir).expanduser().resolve()
    if not (run_dir / trainer.CONFIG_FILE).exists():
        raise trainer.LaunchError(f"{run_dir} is not a slacjax run dir (no {trainer.CONFIG_FILE})")
    cfg = trainer.load_config(run_dir)
    indices = pick_seeds(cfg, eval_cfg.seeds)
    if not (run_dir / checkpoint.CHECKPOINT_DIR).exists():
        raise trainer.LaunchError(f"no checkpoint in {run_dir / checkpoint.CHECKPOINT_DIR}")
    trainer.ensure_gl()
    checkpoints = checkpoint.Checkpoints(run_dir, read_only=True)
    try:
        number, state, meta = restore_state(checkpoints, eval_cfg, cfg)
    finally:
        checkpoints.close()
    env_step = meta["counters"]["env_steps"]
    print(f"{cfg.task}: checkpoint {checkpoints.path(number)} at env step {env_step}", flush=True)
    agent_cfg, stacked, count = cfg.agent_config(), cfg.seeds > 1, len(indices)
    seeds = [cfg.seed + index for index in indices] if stacked else None

    def params_of(index: int):
        return parallel.take_seed(state.params, index) if stacked else state.params

    # With a video each seed's first episode runs in this process; the rest side by side.
    recorded = 1 if eval_cfg.video else 0
    batched = eval_cfg.episodes - recorded
    width = trainer.side_by_side(count * batched, eval_cfg.envs)
    env = trainer.make_eval_env(cfg, width)
    video_env = trainer.make_env(cfg) if eval_cfg.video and width > 1 else env
    results = {}
    try:
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            reset_seeds = [trainer.stream_seed(eval_cfg.seed, 3, int(greedy), episode)
                           for episode in range(eval_cfg.episodes)]
            keys = episodes.episode_keys(jax.random.PRNGKey(eval_cfg.seed), reset_seeds)
            returns = np.zeros((count, eval_cfg.episodes))
            returns[:, recorded:] = episodes.run_episode_batches(
                env, state.params, agent_cfg, jnp.tile(keys[recorded:], (count, 1)), greedy,
                np.tile(reset_seeds[recorded:], count),
                np.repeat(indices, batched) if stacked else None).reshape(count, batched)
            if eval_cfg.video:
                returns[:, 0] = [record_first_episode(
                    video_env, params_of(index), agent_cfg, keys[0], greedy, reset_seeds[0],
                    seed_directory(run_dir, cfg, index) / trainer.MEDIA_DIR
                    / f"policy_{env_step:09d}_{mode}.mp4") for index in indices]
            print("\n".join(report(mode, seeds, returns)), flush=True)
            results[mode] = returns
    finally:
        env.close()
        if video_env is not env:
            video_env.close()
    return results


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
