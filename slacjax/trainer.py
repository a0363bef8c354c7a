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

import dataclasses
import functools
import math
import pathlib
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from slacjax import checkpoint, logger, plots, policy, update
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
push_history = jax.jit(policy.history_push)
reset_history = jax.jit(policy.history_reset, static_argnums=(1, 2))
_replay_sample = jax.jit(replay_lib.sample, static_argnums=(2, 3))
_reconstruct = jax.jit(latent_lib.reconstruct_and_imagine, static_argnames=("cfg", "context"))


@functools.partial(jax.jit, static_argnames=("cfg",))
def policy_action(params, history: policy.History, root_key, index, greedy, cfg):
    """The policy's action with the key fold_in(root_key, index): one dispatch per step."""
    key = jax.random.fold_in(root_key, index)
    return policy.act(params, history.frames, history.actions, key, greedy, cfg)


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


def run_episode(env, params, agent_cfg, key, greedy: bool, reset_seed: int,
                record: bool = False) -> tuple[float, list[np.ndarray]]:
    """One episode of the policy -> (return, its frames if `record`)."""
    obs, _ = env.reset(seed=reset_seed)
    action_dim = int(env.action_space.shape[0])
    history = reset_history(obs, action_dim, agent_cfg.sequence_length)
    frames = [obs] if record else []
    total, step, done = 0.0, 0, False
    while not done:
        action = np.asarray(policy_action(params, history, key, np.int32(step), greedy,
                                          agent_cfg))
        obs, reward, terminated, truncated, _ = env.step(action)
        history = push_history(history, action, obs)
        if record:
            frames.append(obs)
        total += float(reward)
        step += 1
        done = terminated or truncated
    return total, frames


def due(now: int, last: int, every: int) -> bool:
    """Whether a multiple of `every` was crossed since `last`."""
    return now // every > last // every


def make_env(cfg: ExperimentConfig):
    """The task's pixel env, with the run's action repeat, render quality and episode cap."""
    from slacjax import envs  # after ensure_gl_backend(): it imports the simulators

    env = envs.make(cfg.task, seed=cfg.seed, action_repeat=cfg.repeat,
                    render_quality=cfg.render_quality)
    if cfg.episode_env_steps is not None:
        import gymnasium

        agent_steps = math.ceil(cfg.episode_env_steps / cfg.repeat)
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=agent_steps)
    return env


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


class Trainer:
    """One run: owns the envs, the device pytrees, the counters and the run dir's files."""

    def __init__(self, cfg: ExperimentConfig, run_dir: pathlib.Path):
        self.cfg = cfg
        self.agent_cfg = cfg.agent_config()
        self.run_dir = run_dir
        self.env = None
        self.eval_env = None
        self.action_dim = None
        root = jax.random.PRNGKey(cfg.seed)
        self.init_key, self.act_key, self.eval_key, self.picture_key = jax.random.split(root, 4)
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
        self.log = None
        self.progress = logger.Progress(cfg.progress)
        self.pretrain_per_dispatch = cfg.pretrain_updates_per_dispatch or (
            1 if jax.default_backend() == "cpu" else 100)
        self.stopwatch = None
        self.rate_mark = (time.monotonic(), 0)

    # ------------------------------------------------------------------ setup and teardown

    def start(self, resume: bool) -> None:
        """Opens the run dir's checkpoints and log: restores the latest checkpoint or starts."""
        self.checkpoints = checkpoint.Checkpoints(self.run_dir, keep=self.cfg.keep_checkpoints)
        # Restored before the env is built: a bad checkpoint is found before anything is slow.
        meta = self._restore() if resume else None
        self.env = make_env(self.cfg)
        self.action_dim = int(self.env.action_space.shape[0])
        save_config(self.cfg, self.run_dir)
        self.log = logger.MetricsLog(self.run_dir)
        if meta is None:
            self.state = _init_state(self.agent_cfg, self.action_dim, self.init_key)
            self.replay = replay_lib.init(self.cfg.replay_capacity, self.action_dim,
                                          self.agent_cfg.image_size)
            self.counters.wandb_id = logger.new_wandb_id()
        else:
            self.log.truncate(meta["log_rows"])
        self.stopwatch = logger.Stopwatch(self.counters.wall_seconds)
        self.rate_mark = (time.monotonic(), self.counters.env_steps)
        if self.cfg.wandb.enabled:
            self.log.wandb_run = logger.start_wandb(
                self.run_dir, self.counters.wandb_id, name=f"{self.cfg.task}-seed{self.cfg.seed}",
                config=OmegaConf.to_container(OmegaConf.load(self.run_dir / CONFIG_FILE)),
                mode=self.cfg.wandb.mode, project=self.cfg.wandb.project,
                entity=self.cfg.wandb.entity, group=self.cfg.wandb.group)

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
            self.state, self.replay, _ = self.checkpoints.restore(
                number, abstract_state(self.agent_cfg, action_dim),
                abstract_replay(self.cfg, action_dim))
        except checkpoint.CheckpointError as error:
            raise LaunchError(f"{error}; the run dir was left as it is") from error
        except (KeyError, TypeError, ValueError) as error:
            raise LaunchError(f"checkpoint {path} has unreadable counters ({error!r}); the run "
                              "dir was left as it is") from error
        if saved_identity != self.cfg.identity():
            raise LaunchError(f"checkpoint {path} belongs to another run than {CONFIG_FILE} "
                              "says; choose another run_dir, or pass overwrite=true")
        self.counters, self.metric_weight = counters, weight
        if sums is not None:
            self.metric_sum = {key: jnp.asarray(value, jnp.float32) for key, value in sums.items()}
        if counters.phase == "done" and counters.env_steps < self.cfg.env_steps:
            counters.phase = "train"  # env_steps was raised: train on
        print(f"resumed from {path} at env step {counters.env_steps}", flush=True)
        return meta

    def close(self) -> None:
        self.progress.close()
        for env in (self.env, self.eval_env):
            if env is not None:
                env.close()
        if self.log is not None:
            self.log.close()
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
            self.step_env(random_action(self.cfg.seed, c.agent_steps, self.action_dim),
                          training=False)
        if c.agent_steps >= self.cfg.collect_agent_steps:
            self.flush_row()
            c.phase, c.last_log, self.obs = "pretrain", 0, None

    def pretrain(self) -> None:
        """Latent-model-only updates, `pretrain_updates_per_dispatch` per jitted call (by
        default 1 on a CPU, 100 on an accelerator)."""
        c, total = self.counters, self.cfg.pretrain_updates
        self.progress.start("pretrain", c.pretrain_updates, total)
        while c.pretrain_updates < total and self.stop_signal is None:
            count = min(self.pretrain_per_dispatch, total - c.pretrain_updates)
            self.state, metrics = update.pretrain_steps(self.state, self.replay, self.agent_cfg,
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
        while c.env_steps < self.cfg.env_steps and self.stop_signal is None:
            self.begin_episode_if_needed()
            action = np.asarray(policy_action(self.state.params, self.history, self.act_key,
                                              np.int32(c.agent_steps), False, self.agent_cfg))
            self.state, metrics = update.train_steps(self.state, self.replay, self.agent_cfg,
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
            self.history = reset_history(self.obs, self.action_dim,
                                          self.agent_cfg.sequence_length)

    def step_env(self, action: np.ndarray, training: bool) -> None:
        """One agent step on the training env: replay, history, counters, then what is due.

        The order (row, evaluation, then the episode-boundary checkpoint) keeps a checkpoint
        after everything its env step owes, so a resumed run does not redo or skip any of it.
        """
        c = self.counters
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.replay = _replay_add(self.replay, obs, action, np.float32(reward),
                                  np.float32(terminated), np.bool_(False))
        if training:
            self.history = push_history(self.history, action, obs)
        self.obs = obs
        self.episode_return += float(reward)
        c.env_steps += int(info["env_steps"])
        c.agent_steps += 1
        self.progress.advance(int(info["env_steps"]))
        if due(c.env_steps, c.last_log, self.cfg.log_every):
            self.flush_row()
        if training and due(c.env_steps, c.last_eval, self.cfg.eval_every):
            self.evaluate()
        if terminated or truncated:
            c.last_episode_return = self.episode_return
            self.obs = None
            if due(c.env_steps, c.last_checkpoint, self.cfg.checkpoint_every):
                self.save_checkpoint()

    # ------------------------------------------------------------------- metrics and rows

    def accumulate(self, metrics: dict, weight: int) -> None:
        if self.metric_sum is None:
            self.metric_sum = jax.tree.map(jnp.zeros_like, metrics)
        self.metric_sum = _accumulate(self.metric_sum, metrics, np.float32(weight))
        self.metric_weight += weight

    def mean_metrics(self) -> dict:
        """Fetches the mean of the metrics since the last row; stops the run on NaN/inf."""
        if self.metric_sum is None:
            return {}
        means = {key: float(value) / self.metric_weight
                 for key, value in jax.device_get(self.metric_sum).items()}
        bad = sorted(key for key, value in means.items() if not math.isfinite(value))
        if bad:
            latest = self.checkpoints.latest()
            kept = (f"the last good checkpoint is {self.checkpoints.path(latest)}"
                    if latest is not None else "no checkpoint was written yet")
            raise TrainingStopped(
                f"non-finite {', '.join(bad)} ({means[bad[0]]}) in the {self.counters.phase} "
                f"phase before env step {self.counters.env_steps} (update "
                f"{int(jax.device_get(self.state.step))}); stopped, {kept}")
        return means

    def flush_row(self) -> None:
        """Writes one metrics row: the means since the last row, counters, wall time, rate.

        Nothing if nothing happened since the last row (a phase's end right after a row).
        """
        c = self.counters
        position = c.pretrain_updates if c.phase == "pretrain" else c.env_steps
        if position == c.last_log and self.metric_weight == 0:
            return
        means = self.mean_metrics()
        now = time.monotonic()
        seconds, steps = now - self.rate_mark[0], c.env_steps - self.rate_mark[1]
        row = dict(phase=c.phase, env_step=c.env_steps, agent_step=c.agent_steps,
                   wall_time=round(self.stopwatch.seconds(), 3), **means)
        if c.phase == "pretrain":
            row["pretrain_update"] = c.pretrain_updates
        else:
            row["env_steps_per_s"] = round(steps / seconds, 3) if seconds > 0 else None
            row["episode_return"] = c.last_episode_return
        self.log.write(row)
        self.metric_sum, self.metric_weight = None, 0
        self.rate_mark = (now, c.env_steps)
        c.last_log = position

    # ------------------------------------------------------------------------ evaluation

    def evaluate(self) -> None:
        """`eval_episodes` with the stochastic and the greedy policy, then the pictures."""
        c = self.counters
        if self.eval_env is None:
            self.eval_env = make_env(self.cfg)
        started = time.monotonic()
        row = dict(phase="eval", env_step=c.env_steps, agent_step=c.agent_steps)
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            returns = [self.eval_episode(greedy, episode)
                       for episode in range(self.cfg.eval_episodes)]
            row[f"return_{mode}"] = float(np.mean(returns))
            row[f"return_{mode}_std"] = float(np.std(returns))
        row["eval_seconds"] = round(time.monotonic() - started, 3)
        row["wall_time"] = round(self.stopwatch.seconds(), 3)
        self.log.write(row)
        c.evals += 1
        c.last_eval = c.env_steps
        c.last_eval_return = row["return_stochastic"]
        self.progress.eval_done(row["return_stochastic"])
        plots.learning_curve(logger.read_rows(self.run_dir), self.run_dir / CURVE_FILE,
                             title=f"{self.cfg.task}, seed {self.cfg.seed}")
        self.write_reconstruction()

    def eval_episode(self, greedy: bool, episode: int) -> float:
        stream = stream_seed(self.cfg.seed, 2, self.counters.evals, int(greedy), episode)
        total, _ = run_episode(self.eval_env, self.state.params, self.agent_cfg,
                               jax.random.fold_in(self.eval_key, stream), greedy, stream)
        return total

    def write_reconstruction(self) -> None:
        """Ground truth, posterior reconstructions and prior imagination of one replay sequence."""
        c = self.counters
        key = jax.random.fold_in(self.picture_key, c.env_steps + c.pretrain_updates)
        batch = _replay_sample(self.replay, key, 1, self.agent_cfg.sequence_length)
        posterior, prior = _reconstruct(self.state.params.latent, batch, key, cfg=self.agent_cfg,
                                        context=1)
        rows = plots.strip_rows(*(np.asarray(images[0]) for images in
                                  (batch.frames, posterior, prior)))
        media = self.run_dir / MEDIA_DIR
        media.mkdir(exist_ok=True)
        name = f"reconstruction_{c.phase}_{c.env_steps:09d}"
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
            sums = {key: float(value) for key, value in jax.device_get(self.metric_sum).items()}
        c.last_checkpoint = c.env_steps
        c.wall_seconds = self.stopwatch.seconds()
        meta = dict(counters=dataclasses.asdict(c), action_dim=self.action_dim, metric_sum=sums,
                    metric_weight=self.metric_weight, log_rows=self.log.rows_written,
                    identity=self.cfg.identity())
        return self.checkpoints.save(self.state, self.replay, meta)

    def request_stop(self, signum, _frame) -> None:
        """SIGINT/SIGTERM: finish the current step, save, exit; a second SIGINT kills."""
        self.stop_signal = signum
        signal.signal(signum, signal.SIG_DFL)


def run(cfg: ExperimentConfig) -> int:
    """Checks, then runs the protocol for `cfg` -> exit status.

    Raises LaunchError for bad input (before anything in an existing run dir is touched) and
    TrainingStopped when a loss turns NaN/inf.
    """
    run_dir, resume = prepare_run_dir(cfg)
    ensure_gl()
    if cfg.overwrite and run_dir.exists():
        clear_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir)
    previous = {signum: signal.signal(signum, trainer.request_stop)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.start(resume)
        platform = jax.devices()[0].platform
        if not resume:
            print(f"run dir {run_dir}: {cfg.task}, seed {cfg.seed}, {cfg.env_steps} env steps on "
                  f"{platform}", flush=True)
        if platform == "cpu" and cfg.env_steps > 10_000:
            print("training on CPU is slow (about a second per update): see the ETA", flush=True)
        return trainer.run()
    finally:
        trainer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
