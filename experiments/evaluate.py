"""Run a trained policy: `python -m experiments.evaluate run_dir=PATH episodes=10 video=true`.

Loads the latest checkpoint of a run dir (or `checkpoint=N`: the newest one at env step N),
runs `episodes` episodes with the stochastic policy (the paper's metric) and as many with the
greedy one (tanh of the mean), prints both returns, and with `video=true` writes the first
episode of each as `<run_dir>/media/policy_<env step>_<policy>.mp4` (or into `video_dir=`).
Damaged checkpoints are skipped (the latest) or refused (`checkpoint=N`) with one line; bad
input is one line on stderr and a non-zero exit. Writing videos into the run dir needs its
lock: a run dir in use by training is refused (pass `video_dir=` to write elsewhere).

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
    # Where videos go; None: each seed's media/ in the run dir.
    video_dir: typing.Optional[str] = None

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


def pick_seeds(cfg, wanted: list[int] | None) -> list[int]:
    """The places (along the state's seed axis) of the run's seeds to evaluate: all of them,
    or those whose values are `wanted`."""
    from slacjax.run_dir import LaunchError

    seeds = [cfg.seed + index for index in range(cfg.seeds)]
    if wanted is None:
        return list(range(cfg.seeds))
    missing = [seed for seed in wanted if seed not in seeds]
    if missing:
        held = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        raise LaunchError(f"seeds {missing} are not in this run, which has {held}")
    return [seeds.index(seed) for seed in wanted]


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


def restore_params(checkpoints, cfg, env_step: int | None):
    """-> (checkpoint path, the policy's params stacked [N, ...], its env step, Steps).

    Without `env_step`: the newest checkpoint that restores (damaged ones skipped, saying
    so); with it: the newest intact one taken at that env step."""
    from slacjax import checkpoint, run_state
    from slacjax.run_dir import LaunchError
    from slacjax.steps import make_steps

    agent_cfg = cfg.agent_config()

    def abstract_for(meta: dict):
        steps = make_steps(agent_cfg, int(meta["action_dim"]), cfg.seeds)
        stacked = meta.get("format", 1) > 1
        return run_state.abstract_trees(steps, cfg.seeds, cfg.replay_capacity, stacked)[0], None

    try:
        if env_step is None:
            restored = checkpoints.restore_newest(abstract_for)
            if restored is None:
                raise LaunchError(f"no checkpoint in {checkpoints.directory} restores")
            number, state, _, meta = restored
        else:
            metas = checkpoints.metas()
            matching = [number for number, meta in metas.items()
                        if meta["counters"]["env_steps"] == env_step]
            if not matching:
                steps = sorted({meta["counters"]["env_steps"] for meta in metas.values()})
                raise LaunchError(f"no checkpoint at env step {env_step}; there are "
                                  f"checkpoints at env steps {steps}")
            number, meta = max(matching), metas[max(matching)]
            state, _, _ = checkpoints.restore(number, abstract_for(meta)[0])
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError) as error:
        raise LaunchError(str(error)) from error
    state = run_state.with_seed_axis(state, meta)
    steps = make_steps(agent_cfg, int(meta["action_dim"]), cfg.seeds)
    return checkpoints.path(number), state.params, meta["counters"]["env_steps"], steps


def video_directories(run_dir: pathlib.Path, cfg, indices: list[int],
                      video_dir: str | None) -> list[pathlib.Path]:
    """Per evaluated seed, where its videos go (created); LaunchError if it cannot be."""
    from slacjax.run_dir import MEDIA_DIR, LaunchError, seed_directory

    if video_dir is None:
        directories = [seed_directory(run_dir, cfg, index) / MEDIA_DIR for index in indices]
    else:
        root = pathlib.Path(video_dir).expanduser().resolve()
        directories = [root if cfg.seeds == 1 else root / f"seed{cfg.seed + index}"
                       for index in indices]
    for directory in directories:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LaunchError(f"cannot write videos into {directory}: {error.strerror}; pass "
                              "video_dir=PATH to write them elsewhere") from error
    return directories


def lock_for_videos(run_dir: pathlib.Path, eval_cfg: EvalConfig):
    """The run dir's lock when videos go into it (one writer per run dir), else None."""
    from slacjax import run_lock
    from slacjax.run_dir import LaunchError

    if not eval_cfg.video or eval_cfg.video_dir is not None:
        return None
    try:
        return run_lock.acquire(run_dir, "evaluation with video")
    except run_lock.RunDirBusy as error:
        raise LaunchError(f"{error} (or pass video_dir=PATH to write the videos elsewhere)") \
            from error
    except run_lock.RunDirError as error:
        raise LaunchError(f"{error}: cannot write videos there; pass video_dir=PATH to write "
                          "them elsewhere") from error


def record_first_episode(env, steps, params, agent: int, key, greedy: bool, reset_seed: int,
                         path: pathlib.Path) -> float:
    """Plays one episode in this process and writes its video at `path` -> its return."""
    from slacjax import evaluation, plots

    total, frames = evaluation.run_episode(env, steps, params, agent, key, greedy, reset_seed,
                                           record=True)
    print(f"video: {plots.write_video(np.stack(frames), path)}", flush=True)
    return total


def evaluate(eval_cfg: EvalConfig) -> dict[str, np.ndarray]:
    """Prints the returns of the run's policies -> {policy: returns [seeds, episodes]}."""
    import jax
    import jax.numpy as jnp

    from slacjax import checkpoint, evaluation
    from slacjax.run_dir import CONFIG_FILE, LaunchError, load_config
    from slacjax.seeding import stream_seed

    run_dir = pathlib.Path(eval_cfg.run_dir).expanduser().resolve()
    if not (run_dir / CONFIG_FILE).exists():
        raise LaunchError(f"{run_dir} is not a slacjax run dir (no {CONFIG_FILE})")
    cfg = load_config(run_dir)
    indices = pick_seeds(cfg, eval_cfg.seeds)
    if not (run_dir / checkpoint.CHECKPOINT_DIR).exists():
        raise LaunchError(f"no checkpoint in {run_dir / checkpoint.CHECKPOINT_DIR}")
    lock = lock_for_videos(run_dir, eval_cfg)
    env = video_env = None
    try:
        evaluation.ensure_gl()
        checkpoints = checkpoint.Checkpoints(run_dir, read_only=lock is None)
        try:
            path, params, env_step, steps = restore_params(checkpoints, cfg, eval_cfg.checkpoint)
        finally:
            checkpoints.close()
        print(f"{cfg.task}: checkpoint {path} at env step {env_step}", flush=True)
        videos = (video_directories(run_dir, cfg, indices, eval_cfg.video_dir)
                  if eval_cfg.video else None)
        seeds = [cfg.seed + index for index in indices] if cfg.seeds > 1 else None
        # With a video each seed's first episode runs in this process; the rest side by side.
        recorded = 1 if eval_cfg.video else 0
        count, batched = len(indices), eval_cfg.episodes - recorded
        width = evaluation.side_by_side(count * batched, eval_cfg.envs)
        env = evaluation.make_eval_env(cfg, width)
        video_env = evaluation.make_env(cfg, cfg.seed) if eval_cfg.video and width > 1 else env
        results = {}
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            reset_seeds = [stream_seed(eval_cfg.seed, 3, int(greedy), episode)
                           for episode in range(eval_cfg.episodes)]
            keys = evaluation.episode_keys(jax.random.PRNGKey(eval_cfg.seed), reset_seeds)
            returns = np.zeros((count, eval_cfg.episodes))
            returns[:, recorded:] = evaluation.run_episode_batches(
                env, steps, params, np.repeat(indices, batched),
                jnp.tile(keys[recorded:], (count, 1)), greedy,
                np.tile(reset_seeds[recorded:], count)).reshape(count, batched)
            if eval_cfg.video:
                returns[:, 0] = [record_first_episode(
                    video_env, steps, params, index, keys[0], greedy, reset_seeds[0],
                    directory / f"policy_{env_step:09d}_{mode}.mp4")
                    for index, directory in zip(indices, videos)]
            print("\n".join(report(mode, seeds, returns)), flush=True)
            results[mode] = returns
        return results
    except evaluation.NonFiniteAction as error:
        raise LaunchError(f"the policy of checkpoint {path} gives non-finite actions "
                          f"(agent(s) {error.agents})") from error
    finally:
        for opened in {id(e): e for e in (env, video_env) if e is not None}.values():
            opened.close()
        if lock is not None:
            lock.release()


def main() -> None:
    try:
        eval_cfg = parse(sys.argv[1:])
    except USER_ERRORS as error:
        fail(error_line(error))
    from slacjax.run_dir import LaunchError

    try:
        evaluate(eval_cfg)
    except LaunchError as error:
        fail(str(error))


if __name__ == "__main__":
    main()
