"""The SLAC protocol on one task (spec §5): collect → pretrain → train, evaluating as it goes.

The host loop only steps environments and moves counters; learning happens in the jitted,
state-donating functions of `slacjax.update`. One agent step of training is

    act (device) → action to the host → dispatch `train_steps` (async, state donated)
    → `env.step` on the host while the device updates → replay add (device, donated)
    → history push (device)

so rendering hides behind the update. Metrics stay on the device, summed, and are fetched
every `log_every` env steps, where NaN/inf is checked: no host sync per step.

Run dir: `config.yaml` (the resolved config), `metrics.jsonl`, `learning_curve.png`,
`media/` (reconstruction / imagination PNG + GIF per evaluation), `checkpoints/`, `wandb/`.
With `seeds=N > 1` (`slacjax.seeds.SeedsTrainer`) each seed's `metrics.jsonl`,
`learning_curve.png`, `media/` and `wandb/` go to `seed<its seed>/`, the run dir keeps
`config.yaml`, `checkpoints/` (all seeds in one) and the curve of all seeds.

Devices. With `devices=N` (or "all") the state and the replay are replicated on N devices and
the update steps are `slacjax.parallel`'s sharded ones, which split each sampled batch over
them; everything else in the host loop runs as on one device.

Resume and exactness. A checkpoint holds the TrainState (RNG included), the replay, the
counters and the config; it cannot hold the simulator's mid-episode state (the env object,
MuJoCo's physics and the task's RNG live outside JAX). Therefore:
- Periodic checkpoints are taken at episode boundaries: right after an episode ends and
  before the next reset. Every training episode is reset with a seed derived from
  (seed, episode index), every action key from (seed, agent step) and every random action
  from (seed, agent step), so a run resumed from such a checkpoint (or from the end of
  pretraining) continues exactly as the uninterrupted run does: on CPU its logged losses are
  bitwise equal.
- A checkpoint written on SIGINT/SIGTERM is taken where the run stood, possibly mid-episode.
  The resumed run starts a new episode there, so from that point it cannot equal an
  uninterrupted run: the interrupted episode is cut short in its replay.
- Each env phase (collect, train) starts with a fresh episode; the collect phase's last
  episode is cut where collection ends, in every run alike.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
import pathlib
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from slacjax import checkpoint, episodes, logger, parallel, plots, update
from slacjax import latent as latent_lib
from slacjax import replay as replay_lib
from slacjax.config import AgentOverrides, ExperimentConfig

CONFIG_FILE = "config.yaml"
MEDIA_DIR = "media"
CURVE_FILE = "learning_curve.png"


class LaunchError(Exception):
    """Bad input (run dir, checkpoint, host): one line for the user, nothing touched."""


class TrainingStopped(Exception):
    """The run cannot go on (a NaN/inf loss); the last good checkpoint is kept."""


# ---------------------------------------------------------------------------- the run dir


def load_config(run_dir: pathlib.Path) -> ExperimentConfig:
    """The config saved in `run_dir` (typed and validated)."""
    path = run_dir / CONFIG_FILE
    try:
        saved = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OmegaConf.load(path))
        return OmegaConf.to_object(saved)
    except Exception as error:  # yaml, omegaconf and validation errors alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LaunchError(f"cannot read {path}: {reason}") from error


def save_config(cfg: ExperimentConfig, run_dir: pathlib.Path) -> None:
    """Writes the resolved config: the run dir path and every agent value spelled out."""
    resolved = dataclasses.replace(
        cfg, run_dir=str(run_dir), overwrite=False,
        agent=AgentOverrides(**dataclasses.asdict(cfg.agent_config())))
    temporary = run_dir / (CONFIG_FILE + ".tmp")
    temporary.write_text(OmegaConf.to_yaml(OmegaConf.structured(resolved)))
    temporary.replace(run_dir / CONFIG_FILE)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity_mismatch(saved: ExperimentConfig, wanted: ExperimentConfig) -> str | None:
    """What makes `wanted` a different run than the one saved (None: the same run)."""
    old, new = _flatten(saved.identity()), _flatten(wanted.identity())
    differences = [f"{key}={old[key]} (run dir) vs {new[key]} (now)"
                   for key in old if old[key] != new.get(key)]
    return ", ".join(differences) or None


def prepare_run_dir(cfg: ExperimentConfig) -> tuple[pathlib.Path, bool]:
    """Checks the run dir against `cfg` without touching it -> (path, resume?).

    Empty or absent: a fresh run. A slacjax run dir of the same run with a checkpoint: resume.
    Anything else is refused unless overwrite=true (which only clears a slacjax run dir).
    """
    run_dir = pathlib.Path(cfg.run_dir).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise LaunchError(f"run_dir {run_dir} exists and is not a directory")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return run_dir, False
    if not (run_dir / CONFIG_FILE).exists():
        raise LaunchError(f"run_dir {run_dir} is not empty and is not a slacjax run dir (no "
                          f"{CONFIG_FILE}); choose another run_dir")
    if cfg.overwrite:
        return run_dir, False
    mismatch = identity_mismatch(load_config(run_dir), cfg)
    if mismatch:
        raise LaunchError(f"run_dir {run_dir} belongs to another run ({mismatch}); choose "
                          "another run_dir, or pass overwrite=true to start over there")
    if not (run_dir / checkpoint.CHECKPOINT_DIR).exists():
        raise LaunchError(f"run_dir {run_dir} holds a run without a checkpoint to resume "
                          "from; pass overwrite=true to start over there")
    return run_dir, True


def clear_run_dir(run_dir: pathlib.Path) -> None:
    """overwrite=true: empties a slacjax run dir (prepare_run_dir checked it is one)."""
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# ---------------------------------------------------------------- jitted host-loop helpers


# Jitted, init compiles once (and is cached on disk) instead of running op by op.
_init_state = jax.jit(update.init_state, static_argnums=(0, 1))
_replay_add = jax.jit(replay_lib.add, donate_argnums=0)
_replay_sample = jax.jit(replay_lib.sample, static_argnums=(2, 3))
_reconstruct = jax.jit(latent_lib.reconstruct_and_imagine, static_argnames=("cfg", "context"))


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate(total, metrics, weight):
    return jax.tree.map(lambda t, m: t + m * weight, total, metrics)


def stream_seed(*parts: int) -> int:
    """A 32-bit seed for one stream (e.g. (seed, stream, episode)): independent across parts."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def random_action(seed: int, agent_step: int, action_dim: int) -> np.ndarray:
    """The collection phase's uniform action of `agent_step`: reproducible after a resume."""
    rng = np.random.default_rng([seed, 1, agent_step])
    return rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)


def due(now: int, last: int, every: int) -> bool:
    """Whether a multiple of `every` was crossed since `last`."""
    return now // every > last // every


def env_settings(cfg: ExperimentConfig) -> dict:
    """`envs.make`'s arguments for the run: action repeat, render quality, episode cap."""
    cap = (None if cfg.episode_env_steps is None
           else math.ceil(cfg.episode_env_steps / cfg.repeat))
    return dict(action_repeat=cfg.repeat, render_quality=cfg.render_quality,
                max_episode_steps=cap)


def make_env(cfg: ExperimentConfig, seed: int | None = None):
    """The task's pixel env, with the run's action repeat, render quality and episode cap
    (seeded with `seed`, by default the run's)."""
    from slacjax import envs  # after ensure_gl_backend(): it imports the simulators

    return envs.make(cfg.task, seed=cfg.seed if seed is None else seed, **env_settings(cfg))


def run_keys(seed: int) -> tuple[jax.Array, ...]:
    """A run's root keys from its seed: (init, act, eval, picture)."""
    return tuple(jax.random.split(jax.random.PRNGKey(seed), 4))


def side_by_side(episodes: int, envs: int | None) -> int:
    """How many of `episodes` run side by side: `envs`, or what the cores allow (cores − 2);
    at least 1, at most `episodes`."""
    wanted = (os.cpu_count() or 1) - 2 if envs is None else envs
    return max(1, min(wanted, episodes))


def eval_env_count(cfg: ExperimentConfig) -> int:
    """How many evaluation episodes run side by side, all seeds' together (`eval_envs`, or
    what the cores allow): a multi-seed run starts no more env workers than one seed."""
    return side_by_side(cfg.seeds * cfg.eval_episodes, cfg.eval_envs)


def make_eval_env(cfg: ExperimentConfig, count: int):
    """`count` evaluation envs with the run's settings: for 1, one in this process (episodes
    one after another), else a vector env of `count` worker processes."""
    if count == 1:
        return make_env(cfg)
    from slacjax import envs

    return envs.make_vector(cfg.task, count, seed=cfg.seed, **env_settings(cfg))


def device_mesh(cfg: ExperimentConfig):
    """The mesh `devices` asks for, or None for one device; LaunchError if it cannot be had."""
    if jax.process_count() > 1:
        raise LaunchError("the launcher trains on one host; across hosts see README (Multi-host)")
    try:
        mesh = parallel.make_mesh(len(jax.local_devices()) if cfg.devices == "all"
                                  else int(cfg.devices))
        if mesh.size > 1:
            parallel.check_divisible(cfg.agent_config(), mesh)
            parallel.check_divisible(cfg.agent_config(), mesh, latent_only=True)
    except ValueError as error:
        raise LaunchError(f"devices={cfg.devices}: {error}") from error
    return mesh if mesh.size > 1 else None


def abstract_state(agent_cfg, action_dim: int):
    """The TrainState's shapes and dtypes, without computing it (for restoring)."""
    return jax.eval_shape(functools.partial(update.init_state, agent_cfg, action_dim),
                          jax.random.PRNGKey(0))


def abstract_replay(cfg: ExperimentConfig, action_dim: int):
    """The Replay's shapes and dtypes, without allocating it (for restoring)."""
    return jax.eval_shape(functools.partial(replay_lib.init, cfg.replay_capacity, action_dim,
                                            cfg.agent_config().image_size))


def ensure_gl() -> None:
    """Fixes MUJOCO_GL before any simulator is imported; no GL -> LaunchError."""
    from slacjax.envs import ensure_gl_backend

    try:
        ensure_gl_backend()
    except RuntimeError as error:
        raise LaunchError(str(error)) from error


class AheadOfTime:
    """Compiles the phases' jitted steps in a background thread, so that compiling the
    pretraining step overlaps the random collection and compiling the fused step overlaps
    pretraining (tens of seconds each on a GPU).

    `submit` calls the jitted function once in the thread on arguments of their own (copies the
    caller made, so it may go on donating the originals), which fills the function's own
    compilation cache; `get` waits for that. The phase then calls the jitted function as usual
    and keeps jit's C++ dispatch path: calling an ahead-of-time `Compiled` instead goes through
    Python per call, which on the H100 slowed one-update-per-call pretraining from 324 to 243
    updates/s. The warm-up call's results (an update on the copies) are dropped.
    """

    def __init__(self):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                         thread_name_prefix="slacjax-compile")
        self.programs: dict[str, concurrent.futures.Future] = {}

    def submit(self, name: str, jitted, *args) -> None:
        """Warms `jitted(*args)` up; pass arguments as the phase will (positional and keyword
        arguments are cached apart), arrays that nothing else donates."""
        self.programs[name] = self.pool.submit(
            lambda: jax.block_until_ready(jitted(*args)) and None)

    def get(self, name: str) -> None:
        """Waits for `name`'s warm-up, if one was submitted (raises what it raised)."""
        if name in self.programs:
            self.programs[name].result()

    def close(self) -> None:
        """Drops warm-ups not yet started and waits for one still compiling (XLA cannot stop
        a compile; the interpreter would wait for its thread at exit anyway)."""
        if any(program.running() for program in self.programs.values()):
            print("waiting for a background compile to finish before exiting", flush=True)
        self.pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------- counters


@dataclasses.dataclass
class Counters:
    """Where the run stands; saved in every checkpoint's meta."""

    phase: str = "collect"  # collect | pretrain | train | done
    env_steps: int = 0
    agent_steps: int = 0
    pretrain_updates: int = 0
    episodes: int = 0  # training episodes started: the next one's index
    evals: int = 0
    last_log: int = 0  # env step (pretrain: update) of the last row, for `due`
    last_eval: int = 0
    last_checkpoint: int = 0
    last_episode_return: float | None = None
    last_eval_return: float | None = None
    wall_seconds: float = 0.0
    wandb_id: str = ""


# ---------------------------------------------------------------------------- the trainer


@dataclasses.dataclass
class SeedView:
    """One agent of a run as its files and RNG streams see it (a single-seed run has one):
    the seed its env resets, random actions and evaluations derive from, and the folder of
    its metrics, learning curve, media and wandb run."""

    index: int  # along the stacked axis of a multi-seed run's state and replay
    seed: int
    directory: pathlib.Path
    eval_key: jax.Array
    picture_key: jax.Array
    log: logger.MetricsLog | None = None


class Trainer:
    """One run: owns the envs, the device pytrees, the counters and the run dir's files.

    The hooks a multi-seed run (`slacjax.seeds.SeedsTrainer`) overrides are the update steps,
    the envs and what is kept per seed: `seed_views`, `make_envs`, `init_training`,
    `abstract_trees`, `random_action`, `policy_action`, `begin_episode_if_needed`, `step_env`,
    `end_episodes`, `seed_metrics`, `episode_returns`, `eval_params`, `reconstruction_strips`,
    `plot_seeds`, `checkpoint_meta` / `restore_meta` and `wandb_settings`.
    """

    # The K-update steps, jitted and state-donating: (state, replay, cfg, num_steps) ->
    # (state, metrics).
    pretrain_steps = staticmethod(update.pretrain_steps)
    train_steps = staticmethod(update.train_steps)

    def __init__(self, cfg: ExperimentConfig, run_dir: pathlib.Path):
        self.cfg = cfg
        self.agent_cfg = cfg.agent_config()
        self.run_dir = run_dir
        self.env = None
        self.eval_env = None
        self.action_dim = None
        self.init_key, self.act_key, self.eval_key, self.picture_key = run_keys(cfg.seed)
        self.counters = Counters()
        self.state = None
        self.replay = None
        self.metric_sum = None
        self.metric_weight = 0
        self.obs = None  # the current training frame; None at an episode boundary
        self.history = None
        self.episode_return = 0.0
        self.stop_signal = None
        self.checkpoints = None
        self.views: list[SeedView] = []
        self.progress = logger.Progress(cfg.progress)
        self.pretrain_per_dispatch = cfg.pretrain_updates_per_dispatch or (
            1 if jax.default_backend() == "cpu" else 100)
        self.stopwatch = None
        self.rate_mark = (time.monotonic(), 0)
        self.compiler = AheadOfTime()
        self.mesh = device_mesh(cfg)
        if self.mesh is not None:
            self.pretrain_steps = functools.partial(parallel.pretrain_steps_sharded,
                                                    mesh=self.mesh)
            self.train_steps = functools.partial(parallel.train_steps_sharded, mesh=self.mesh)

    # ------------------------------------------------------------------ setup and teardown

    def start(self, resume: bool) -> None:
        """Opens the run dir's checkpoints and log: restores the latest checkpoint or starts."""
        self.checkpoints = checkpoint.Checkpoints(self.run_dir, keep=self.cfg.keep_checkpoints)
        # Restored before the env is built: a bad checkpoint is found before anything is slow.
        meta = self._restore() if resume else None
        self.make_envs()
        save_config(self.cfg, self.run_dir)
        self.views = self.seed_views()
        for view in self.views:
            view.directory.mkdir(exist_ok=True)
            view.log = logger.MetricsLog(view.directory)
        if meta is None:
            self.init_training()
            self.counters.wandb_id = logger.new_wandb_id()
        else:
            for view, rows in zip(self.views, np.atleast_1d(meta["log_rows"])):
                view.log.truncate(int(rows))
        if self.mesh is not None:
            # A copy on every device; the host loop's adds, acts and pictures then run on
            # all of them alike, and only the sampled batches are split.
            self.state, self.replay = parallel.replicate((self.state, self.replay), self.mesh)
        self.compile_ahead()
        self.stopwatch = logger.Stopwatch(self.counters.wall_seconds)
        self.rate_mark = (time.monotonic(), self.counters.env_steps)
        if self.cfg.wandb.enabled:
            config = OmegaConf.to_container(OmegaConf.load(self.run_dir / CONFIG_FILE))
            for view in self.views:
                view.log.wandb_run = logger.start_wandb(
                    view.directory, name=f"{self.cfg.task}-seed{view.seed}", config=config,
                    mode=self.cfg.wandb.mode, project=self.cfg.wandb.project,
                    entity=self.cfg.wandb.entity, **self.wandb_settings(view))

    def seed_views(self) -> list[SeedView]:
        """The run's agents: here one, the run's seed, whose files are the run dir's own."""
        return [SeedView(0, self.cfg.seed, self.run_dir, self.eval_key, self.picture_key)]

    def make_envs(self) -> None:
        self.env = make_env(self.cfg)
        self.action_dim = int(self.env.action_space.shape[0])

    def init_training(self) -> None:
        """A fresh state and an empty replay."""
        self.state = _init_state(self.agent_cfg, self.action_dim, self.init_key)
        self.replay = replay_lib.init(self.cfg.replay_capacity, self.action_dim,
                                      self.agent_cfg.image_size)

    def abstract_trees(self, action_dim: int) -> tuple:
        """The state's and the replay's shapes and dtypes (for restoring)."""
        return abstract_state(self.agent_cfg, action_dim), abstract_replay(self.cfg, action_dim)

    def wandb_settings(self, view: SeedView) -> dict:
        """`logger.start_wandb`'s run id and group for the seed of `view`."""
        return dict(run_id=self.counters.wandb_id, group=self.cfg.wandb.group)

    def compile_ahead(self) -> None:
        """Starts compiling the steps of the phases still to come (see AheadOfTime)."""
        phase = self.counters.phase
        copy = functools.partial(jax.tree.map, jnp.copy)
        replay = copy(self.replay)  # one copy for both: the steps read the replay, never donate it
        if phase in ("collect", "pretrain") and self.cfg.pretrain_updates > 0:
            self.compiler.submit("pretrain", self.pretrain_steps, copy(self.state), replay,
                                 self.agent_cfg, self.pretrain_per_dispatch)
        if phase != "done":
            self.compiler.submit("train", self.train_steps, copy(self.state), replay,
                                 self.agent_cfg, self.cfg.updates_per_step)

    def _restore(self) -> dict:
        """Loads the latest checkpoint into the trainer -> its meta; LaunchError if unusable."""
        number = self.checkpoints.latest()
        if number is None:
            raise LaunchError(f"run_dir {self.run_dir} has no complete checkpoint to resume "
                              "from; pass overwrite=true to start over there")
        path = self.checkpoints.path(number)
        try:
            meta = self.checkpoints.meta(number)
            counters = Counters(**meta["counters"])
            sums, weight = meta["metric_sum"], int(meta["metric_weight"])
            action_dim, saved_identity = int(meta["action_dim"]), meta["identity"]
            self.restore_meta(meta)
            self.state, self.replay, _ = self.checkpoints.restore(
                number, *self.abstract_trees(action_dim))
        except checkpoint.CheckpointError as error:
            raise LaunchError(f"{error}; the run dir was left as it is") from error
        except (KeyError, TypeError, ValueError) as error:
            raise LaunchError(f"checkpoint {path} has unreadable counters ({error!r}); the run "
                              "dir was left as it is") from error
        # Checkpoints written before `seeds` existed are of one seed.
        if {"seeds": 1, **saved_identity} != self.cfg.identity():
            raise LaunchError(f"checkpoint {path} belongs to another run than {CONFIG_FILE} "
                              "says; choose another run_dir, or pass overwrite=true")
        self.counters, self.metric_weight = counters, weight
        if sums is not None:
            self.metric_sum = {key: jnp.asarray(value, jnp.float32) for key, value in sums.items()}
        if counters.phase == "done" and counters.env_steps < self.cfg.env_steps:
            counters.phase = "train"  # env_steps was raised: train on
        print(f"resumed from {path} at env step {counters.env_steps}", flush=True)
        return meta

    def restore_meta(self, meta: dict) -> None:
        """Reads what `checkpoint_meta` added (KeyError, TypeError, ValueError if unreadable)."""

    def close(self) -> None:
        self.compiler.close()
        self.progress.close()
        for env in (self.env, self.eval_env):
            if env is not None:
                env.close()
        for view in self.views:
            if view.log is not None:
                view.log.close()
        if self.checkpoints is not None:
            self.checkpoints.close()

    # ---------------------------------------------------------------------------- phases

    def run(self) -> int:
        """Runs the protocol to its end or to a stop signal -> exit status (0, or 128+signal)."""
        phases = {"collect": self.collect, "pretrain": self.pretrain, "train": self.train}
        while self.counters.phase in phases:
            phases[self.counters.phase]()
            if self.stop_signal is not None:
                path = self.save_checkpoint()
                self.progress.close()
                print(f"stopped by {signal.Signals(self.stop_signal).name} at env step "
                      f"{self.counters.env_steps}: saved {path}; run the same command to resume",
                      flush=True)
                return 128 + self.stop_signal
        self.progress.close()
        print(f"done: {self.counters.env_steps} env steps; run dir {self.run_dir}", flush=True)
        return 0

    def collect(self) -> None:
        """Uniformly random actions into the replay, `collect_agent_steps` of them."""
        c = self.counters
        self.progress.start("collect", c.env_steps, self.cfg.collect_agent_steps * self.cfg.repeat)
        while c.agent_steps < self.cfg.collect_agent_steps and self.stop_signal is None:
            self.begin_episode_if_needed()
            self.step_env(self.random_action(), training=False)
        if c.agent_steps >= self.cfg.collect_agent_steps:
            self.flush_row()
            c.phase, c.last_log, self.obs = "pretrain", 0, None

    def pretrain(self) -> None:
        """Latent-model-only updates, `pretrain_updates_per_dispatch` per jitted call (by
        default 1 on a CPU, 100 on an accelerator)."""
        c, total = self.counters, self.cfg.pretrain_updates
        self.progress.start("pretrain", c.pretrain_updates, total)
        self.compiler.get("pretrain")
        while c.pretrain_updates < total and self.stop_signal is None:
            count = min(self.pretrain_per_dispatch, total - c.pretrain_updates)
            self.state, metrics = self.pretrain_steps(self.state, self.replay, self.agent_cfg,
                                                      count)
            self.accumulate(metrics, count)
            c.pretrain_updates += count
            self.progress.advance(count, env_step=c.env_steps)
            if due(c.pretrain_updates, c.last_log, self.cfg.pretrain_log_every):
                self.flush_row()
        if c.pretrain_updates >= total:
            self.flush_row()
            if total > 0:
                self.write_reconstruction()
            c.phase, c.last_log, c.last_eval = "train", c.env_steps, c.env_steps
            self.save_checkpoint()  # pretraining is the expensive part: keep it

    def train(self) -> None:
        """Per agent step: one env step with the stochastic policy and one fused update."""
        c = self.counters
        self.progress.start("train", c.env_steps, self.cfg.env_steps)
        if self.counters.last_eval_return is not None:
            self.progress.eval_done(self.counters.last_eval_return)
        self.compiler.get("train")
        while c.env_steps < self.cfg.env_steps and self.stop_signal is None:
            self.begin_episode_if_needed()
            action = self.policy_action()
            self.state, metrics = self.train_steps(self.state, self.replay, self.agent_cfg,
                                                   self.cfg.updates_per_step)
            self.accumulate(metrics, 1)
            self.step_env(action, training=True)
        if c.env_steps >= self.cfg.env_steps:
            self.flush_row()
            if c.last_eval != c.env_steps:
                self.evaluate()
            c.phase = "done"
            self.save_checkpoint()

    # ------------------------------------------------------------------------- env steps

    def random_action(self) -> np.ndarray:
        """The collection phase's uniform action of this agent step."""
        return random_action(self.cfg.seed, self.counters.agent_steps, self.action_dim)

    def policy_action(self) -> np.ndarray:
        """The stochastic policy's action of this agent step (key: the act key and the step)."""
        return np.asarray(episodes.policy_action(
            self.state.params, self.history, self.act_key, np.int32(self.counters.agent_steps),
            False, self.agent_cfg))

    def begin_episode_if_needed(self) -> None:
        if self.obs is not None:
            return
        c = self.counters
        self.obs, _ = self.env.reset(seed=stream_seed(self.cfg.seed, 0, c.episodes))
        c.episodes += 1
        self.episode_return = 0.0
        zero = np.zeros(self.action_dim, np.float32)
        self.replay = _replay_add(self.replay, self.obs, zero, np.float32(0), np.float32(0),
                                  np.bool_(True))
        if c.phase == "train":
            self.history = episodes.reset_history(self.obs, self.action_dim,
                                                  self.agent_cfg.sequence_length)

    def step_env(self, action: np.ndarray, training: bool) -> None:
        """One agent step on the training env: replay, history, then `after_env_step`."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.replay = _replay_add(self.replay, obs, action, np.float32(reward),
                                  np.float32(terminated), np.bool_(False))
        if training:
            self.history = episodes.push_history(self.history, action, obs)
        self.obs = obs
        self.episode_return += float(reward)
        self.after_env_step(int(info["env_steps"]), training, terminated or truncated)

    def after_env_step(self, env_steps: int, training: bool, ended) -> None:
        """Counters, then what is due after an agent step that took `env_steps` env steps.

        The order (row, evaluation, then the episode-boundary checkpoint) keeps a checkpoint
        after everything its env step owes, so a resumed run does not redo or skip any of it.
        """
        c = self.counters
        c.env_steps += env_steps
        c.agent_steps += 1
        self.progress.advance(env_steps)
        if due(c.env_steps, c.last_log, self.cfg.log_every):
            self.flush_row()
        if training and due(c.env_steps, c.last_eval, self.cfg.eval_every):
            self.evaluate()
        if (self.end_episodes(ended)
                and due(c.env_steps, c.last_checkpoint, self.cfg.checkpoint_every)):
            self.save_checkpoint()

    def end_episodes(self, ended: bool) -> bool:
        """Closes the episode if it `ended` -> whether a periodic checkpoint may be taken now."""
        if ended:
            self.counters.last_episode_return = self.episode_return
            self.obs = None
        return ended

    # ------------------------------------------------------------------- metrics and rows

    def accumulate(self, metrics: dict, weight: int) -> None:
        if self.metric_sum is None:
            self.metric_sum = jax.tree.map(jnp.zeros_like, metrics)
        self.metric_sum = _accumulate(self.metric_sum, metrics, np.float32(weight))
        self.metric_weight += weight

    def mean_metrics(self) -> dict:
        """Fetches the mean of the metrics since the last row: {name: float}, or a list over
        the seeds of a multi-seed run; stops the run on NaN/inf (naming the seed)."""
        if self.metric_sum is None:
            return {}
        means = {key: np.asarray(value, np.float64) / self.metric_weight
                 for key, value in jax.device_get(self.metric_sum).items()}
        bad = sorted(key for key, value in means.items() if not np.isfinite(value).all())
        if bad:
            values = np.ravel(means[bad[0]])
            index = int(np.flatnonzero(~np.isfinite(values))[0])
            latest = self.checkpoints.latest()
            kept = (f"the last good checkpoint is {self.checkpoints.path(latest)}"
                    if latest is not None else "no checkpoint was written yet")
            seed = "" if len(self.views) == 1 else f" of seed {self.views[index].seed}"
            update_count = int(np.ravel(jax.device_get(self.state.step))[index])
            raise TrainingStopped(
                f"non-finite {', '.join(bad)} ({values[index]}){seed} in the "
                f"{self.counters.phase} phase before env step {self.counters.env_steps} (update "
                f"{update_count}); stopped, {kept}")
        return {key: value.tolist() for key, value in means.items()}

    def seed_metrics(self, means: dict) -> list[dict]:
        """`mean_metrics` split per seed (one dict per view)."""
        return [means]

    def episode_returns(self) -> list[float | None]:
        """Each seed's last finished training episode's return."""
        return [self.counters.last_episode_return]

    def flush_row(self) -> None:
        """Writes one metrics row per seed: the means since the last row, counters, wall time,
        rate.

        Nothing if nothing happened since the last row (a phase's end right after a row).
        """
        c = self.counters
        position = c.pretrain_updates if c.phase == "pretrain" else c.env_steps
        if position == c.last_log and self.metric_weight == 0:
            return
        means = self.seed_metrics(self.mean_metrics())
        now = time.monotonic()
        seconds, steps = now - self.rate_mark[0], c.env_steps - self.rate_mark[1]
        wall_time = round(self.stopwatch.seconds(), 3)
        for view, seed_means, episode_return in zip(self.views, means, self.episode_returns()):
            row = dict(phase=c.phase, env_step=c.env_steps, agent_step=c.agent_steps,
                       wall_time=wall_time, **seed_means)
            if c.phase == "pretrain":
                row["pretrain_update"] = c.pretrain_updates
            else:
                row["env_steps_per_s"] = round(steps / seconds, 3) if seconds > 0 else None
                row["episode_return"] = episode_return
            view.log.write(row)
        self.metric_sum, self.metric_weight = None, 0
        self.rate_mark = (now, c.env_steps)
        c.last_log = position

    # ------------------------------------------------------------------------ evaluation

    def evaluate(self) -> None:
        """`eval_episodes` with the stochastic and the greedy policy of each seed, then the
        pictures."""
        c = self.counters
        started = time.monotonic()
        rows = [dict(phase="eval", env_step=c.env_steps, agent_step=c.agent_steps)
                for _ in self.views]
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            for row, returns in zip(rows, self.eval_returns(greedy)):
                row[f"return_{mode}"] = float(np.mean(returns))
                row[f"return_{mode}_std"] = float(np.std(returns))
        seconds = round(time.monotonic() - started, 3)
        for view, row in zip(self.views, rows):
            row["eval_seconds"] = seconds
            row["wall_time"] = round(self.stopwatch.seconds(), 3)
            view.log.write(row)
            plots.learning_curve(logger.read_rows(view.directory), view.directory / CURVE_FILE,
                                 title=f"{self.cfg.task}, seed {view.seed}")
        c.evals += 1
        c.last_eval = c.env_steps
        c.last_eval_return = float(np.mean([row["return_stochastic"] for row in rows]))
        self.progress.eval_done(c.last_eval_return)
        self.plot_seeds()
        self.write_reconstruction()

    def plot_seeds(self) -> None:
        """The curve of all seeds together (a multi-seed run's)."""

    def eval_params(self) -> tuple:
        """The parameters evaluation acts with -> (params, stacked): the agent's, or (stacked)
        the seeds' along a leading [N] axis, view.index being a seed's place."""
        return self.state.params, False

    def eval_returns(self, greedy: bool) -> list[list[float]]:
        """Per seed (view), the returns of its `eval_episodes` episodes: all seeds' episodes
        side by side, `eval_env_count` at a time (`episodes.run_episode_batches`).

        Episode e of evaluation n of a seed has the reset seed and key of stream (its seed, 2,
        n, greedy, e) however many run side by side and whichever seeds share a batch.
        """
        if self.eval_env is None:
            self.eval_env = make_eval_env(self.cfg, eval_env_count(self.cfg))
        count = self.cfg.eval_episodes
        streams = [[stream_seed(view.seed, 2, self.counters.evals, int(greedy), episode)
                    for episode in range(count)] for view in self.views]
        keys = jnp.concatenate([episodes.episode_keys(view.eval_key, view_streams)
                                for view, view_streams in zip(self.views, streams)])
        params, stacked = self.eval_params()
        agents = np.repeat([view.index for view in self.views], count) if stacked else None
        returns = episodes.run_episode_batches(self.eval_env, params, self.agent_cfg, keys,
                                               greedy, np.concatenate(streams), agents)
        return returns.reshape(len(self.views), count).tolist()

    def reconstruction_strips(self, step: int) -> list[np.ndarray]:
        """Per seed, one replay sequence's truth / posterior / prior rows (`plots.strip_rows`),
        drawn with the picture key folded with `step`."""
        key = jax.random.fold_in(self.picture_key, step)
        batch = _replay_sample(self.replay, key, 1, self.agent_cfg.sequence_length)
        posterior, prior = _reconstruct(self.state.params.latent, batch, key, cfg=self.agent_cfg,
                                        context=1)
        return [plots.strip_rows(*(np.asarray(images[0]) for images in
                                   (batch.frames, posterior, prior)))]

    def write_reconstruction(self) -> None:
        """Ground truth, posterior reconstructions and prior imagination of one replay sequence
        (per seed)."""
        c = self.counters
        strips = self.reconstruction_strips(c.env_steps + c.pretrain_updates)
        name = f"reconstruction_{c.phase}_{c.env_steps:09d}"
        for view, rows in zip(self.views, strips):
            media = view.directory / MEDIA_DIR
            media.mkdir(exist_ok=True)
            plots.reconstruction_strip(rows, media / f"{name}.png", media / f"{name}.gif",
                                       title=f"{self.cfg.task} at env step {c.env_steps}: "
                                             "truth / posterior / prior from frame 0")

    # ------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> pathlib.Path:
        """Checks the metrics since the last row first: a NaN state is never saved."""
        c = self.counters
        sums = None
        if self.metric_sum is not None:
            self.mean_metrics()
            sums = {key: np.asarray(value).tolist()
                    for key, value in jax.device_get(self.metric_sum).items()}
        c.last_checkpoint = c.env_steps
        c.wall_seconds = self.stopwatch.seconds()
        meta = dict(counters=dataclasses.asdict(c), action_dim=self.action_dim, metric_sum=sums,
                    metric_weight=self.metric_weight, **self.checkpoint_meta(),
                    identity=self.cfg.identity())
        return self.checkpoints.save(self.state, self.replay, meta)

    def checkpoint_meta(self) -> dict:
        """The rows each seed's log holds (and, for several seeds, their own counters)."""
        return dict(log_rows=self.views[0].log.rows_written)

    def request_stop(self, signum, _frame) -> None:
        """SIGINT/SIGTERM: finish the current step, save, exit; a second SIGINT kills."""
        self.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)


def trainer_class(cfg: ExperimentConfig) -> type[Trainer]:
    """Trainer for one seed, SeedsTrainer (`slacjax.seeds`) for `seeds` > 1."""
    if cfg.seeds == 1:
        return Trainer
    from slacjax.seeds import SeedsTrainer

    return SeedsTrainer


def run(cfg: ExperimentConfig) -> int:
    """Checks, then runs the protocol for `cfg` -> exit status.

    Raises LaunchError for bad input (before anything in an existing run dir is touched) and
    TrainingStopped when a loss turns NaN/inf.
    """
    run_dir, resume = prepare_run_dir(cfg)
    ensure_gl()
    trainer = trainer_class(cfg)(cfg, run_dir)
    if cfg.overwrite and run_dir.exists():
        clear_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = {signum: signal.signal(signum, trainer.request_stop)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.start(resume)
        platform = jax.devices()[0].platform
        if not resume:
            seeds = (f"seed {cfg.seed}" if cfg.seeds == 1 else
                     f"seeds {cfg.seed}-{cfg.seed + cfg.seeds - 1} in one process")
            devices = "" if trainer.mesh is None else f" ×{trainer.mesh.size}"
            print(f"run dir {run_dir}: {cfg.task}, {seeds}, {cfg.env_steps} env steps on "
                  f"{platform}{devices}", flush=True)
        if platform == "cpu" and cfg.env_steps > 10_000:
            print("training on CPU is slow (about a second per update): see the ETA", flush=True)
        return trainer.run()
    finally:
        trainer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
