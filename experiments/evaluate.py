"""Run a trained policy: `python -m experiments.evaluate run_dir=PATH episodes=10 video=true`.

Loads the latest checkpoint of a run dir (or `checkpoint=N`: the newest one at env step N),
runs `episodes` episodes with the stochastic policy (the paper's metric) and as many with the
greedy one (tanh of the mean), prints both returns, and with `video=true` writes the first
episode of each as `<run_dir>/media/policy_<env step>_<policy>.mp4` (or into `video_dir=`),
whole or not at all. The checkpoint is chosen as training chooses one to resume from
(`slacjax.run_state.restore_newest`): a damaged one is skipped with one line naming it, the
file and the cause, for the newest intact one (at that env step, with `checkpoint=N`). Bad
input, a failed write and Ctrl-C are one line on stderr and a non-zero exit (2, 1, 130).
Writing videos into the run dir needs its lock: a run dir in use by training is refused
(pass `video_dir=` to write elsewhere).

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
import signal
import sys
import typing
import warnings

from slacjax import durable

INTERRUPTED = "interrupted; no video was left half-written"


class StopRequest:
    """Ctrl-C in an evaluation. Until the envs are being made it ends the process at once: one
    line, nothing to undo (the lock goes with the process). From then on it raises
    KeyboardInterrupt, so that the envs' workers (which ignore SIGINT) are stopped and a video
    being written is removed. Where C code that called into Python drops it (a simulator's
    callback through ctypes, a garbage-collector callback: both print it and go on), it is
    raised again, unprinted, 0.1 s later (SIGALRM) and at the next policy call (`check`)."""

    def __init__(self):
        self.requested = False
        self.making_envs = False

    def handle(self, signum: int, _frame) -> None:
        if not self.making_envs:
            sys.stdout.flush()
            print(f"error: {INTERRUPTED}", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.requested = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def raise_dropped_again(self, hook):
        """`hook` (a sys.unraisablehook) but for a KeyboardInterrupt of this request that C
        code dropped: that one is raised again 0.1 s later."""
        def unraisablehook(unraisable) -> None:
            if isinstance(unraisable.exc_value, KeyboardInterrupt) and self.requested:
                signal.setitimer(signal.ITIMER_REAL, 0.1)
                return
            hook(unraisable)

        return unraisablehook


STOP = StopRequest()
if __name__ == "__main__":  # before the imports below, which take seconds
    signal.signal(signal.SIGINT, STOP.handle)

from experiments.run import REPO_DIR, USER_ERRORS, error_line, fail, quote_non_ascii  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_DIR / ".jax_cache"))

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import MISSING, OmegaConf  # noqa: E402


@dataclasses.dataclass
class EvalConfig:
    run_dir: str = MISSING  # the run dir to evaluate (its config.yaml and checkpoints)
    episodes: int = 10  # episodes of each policy (stochastic, greedy)
    # Write each policy's first episode as an MP4: policy_<env step>_<policy>.mp4 in the run
    # dir's media/ (or video_dir).
    video: bool = False
    checkpoint: typing.Optional[int] = None  # the env step of the checkpoint; None: the latest
    seed: int = 0  # seed of the episodes' resets and keys (the run's own is in its config)
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
    count = returns.shape[1]
    episodes = f"{count} episode{'s' * (count != 1)}"
    if seeds is None:
        return [f"{mode} return: {returns.mean():.1f} ± {returns.std():.1f} over {episodes}"]
    means = returns.mean(axis=1)
    lines = [f"seed {seed}: {mode} return {row.mean():.1f} ± {row.std():.1f} over {episodes}"
             for seed, row in zip(seeds, returns)]
    return lines + [f"{mode} return: {means.mean():.1f} ± {means.std():.1f} across "
                    f"{len(seeds)} seeds ({episodes} each)"]


def restore_params(checkpoints, cfg, env_step: int | None):
    """-> (checkpoint path, the policy's params stacked [N, ...], its env step, Steps).

    Without `env_step`: the newest checkpoint that restores; with it: the newest one taken
    at that env step that restores (damaged ones skipped, saying so)."""
    from slacjax import run_state
    from slacjax.run_dir import LaunchError
    from slacjax.steps import make_steps

    agent_cfg = cfg.agent_config()
    made = {}

    def steps_for(action_dim: int):
        if action_dim not in made:
            made[action_dim] = make_steps(agent_cfg, action_dim, cfg.seeds)
        return made[action_dim]

    seen = set()

    def wanted(record) -> bool:
        seen.add(record.counters.env_steps)
        return env_step is None or record.counters.env_steps == env_step

    restored = run_state.restore_newest(checkpoints, cfg, steps_for, with_replay=False,
                                        accept=wanted)
    if restored is None:
        if env_step is None:
            raise LaunchError(f"no checkpoint in {checkpoints.directory} restores")
        others = (f"there are checkpoints at env steps {sorted(seen)}" if seen
                  else "no other checkpoint is intact")
        raise LaunchError(f"no checkpoint at env step {env_step} restores; {others}")
    return (restored.path, restored.state.params, restored.record.counters.env_steps,
            steps_for(restored.action_dim))


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
    STOP.check()
    print(f"video: {plots.write_video(np.stack(frames), path)}", flush=True)
    return total


def stopping(act):
    """`act` (Steps.act) that first takes a pending Ctrl-C: each policy call is a safe point."""
    def act_unless_stopped(*args, **kwargs):
        STOP.check()
        return act(*args, **kwargs)

    return act_unless_stopped


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
        steps = dataclasses.replace(steps, act=stopping(steps.act))
        print(f"{cfg.task}: checkpoint {path} at env step {env_step}", flush=True)
        videos = (video_directories(run_dir, cfg, indices, eval_cfg.video_dir)
                  if eval_cfg.video else None)
        seeds = [cfg.seed + index for index in indices] if cfg.seeds > 1 else None
        # With a video each seed's first episode runs in this process; the rest side by side.
        recorded = 1 if eval_cfg.video else 0
        count, batched = len(indices), eval_cfg.episodes - recorded
        width = evaluation.side_by_side(count * batched, eval_cfg.envs)
        STOP.making_envs = True
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
            close_env(opened, at_once=STOP.requested)
        if lock is not None:
            lock.release()


def close_env(env, at_once: bool) -> None:
    """Closes `env`; `at_once` (Ctrl-C) stops a vector env's workers without waiting for what
    they are doing (gymnasium would warn of the call it leaves pending)."""
    if not at_once or not hasattr(env, "processes"):
        env.close()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.close(terminate=True)


def help_text() -> str:
    """`--help`: what the command does, then every key with its type, default and meaning."""
    from slacjax.config import keys_help

    return "\n\n".join([
        "Evaluate a run's policies: python -m experiments.evaluate run_dir=PATH [key=value ...]",
        __doc__.split("\n\n")[1].strip(), "Keys (key=value):", keys_help(EvalConfig)])


def main() -> None:
    """The command: exit status 0; 2 for bad input, 1 for a failed write, 130 for Ctrl-C
    (`StopRequest`), each with one line."""
    if any(argument in ("-h", "--help") for argument in sys.argv[1:]):
        print(help_text())
        return
    signal.signal(signal.SIGINT, STOP.handle)
    signal.signal(signal.SIGALRM, STOP.handle)
    sys.unraisablehook = STOP.raise_dropped_again(sys.unraisablehook)
    try:
        try:
            eval_cfg = parse(quote_non_ascii(sys.argv[1:]))
        except USER_ERRORS as error:
            fail(error_line(error))
        from slacjax.run_dir import LaunchError

        try:
            evaluate(eval_cfg)
        except LaunchError as error:
            fail(str(error))
        except durable.WriteError as error:
            fail(str(error), status=1)
    except KeyboardInterrupt:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one: the line is on its way
        fail(INTERRUPTED, status=128 + signal.SIGINT)


if __name__ == "__main__":
    main()
