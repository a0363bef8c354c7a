"""The SLAC protocol (spec §5) for N seeds at once: collect → pretrain → train, evaluating.

Every device pytree carries a leading seed axis (N = `seeds`, 1 by default) and every step
is one program of `slacjax.steps` for all seeds; the host steps one env per seed. One agent
step of training: act (device) → actions to the host → dispatch the fused update (async,
state donated) → `env.step` per seed while the device updates → replay add → history push.
Metrics stay on the device, summed, until a row is due; NaN/inf is checked there.

Resume is exact at episode boundaries: episode resets, random actions and action keys
derive from (seed, episode or agent step) (`slacjax.seeding`), and periodic checkpoints wait
for an agent step where every seed's episode ended (or are taken a period late). A
checkpoint taken on SIGINT/SIGTERM mid-episode restarts that episode.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from slacjax import checkpoint, evaluation, logger, parallel, plots, reference, run_state
from slacjax.compile_ahead import AheadOfTime
from slacjax.config import ExperimentConfig
from slacjax.run_dir import (CONFIG_FILE, CURVE_FILE, DIAGNOSTICS_FILE, MEDIA_DIR, LaunchError,
                             RunDir, open_run_dir, save_config, seed_directory)
from slacjax.run_state import Counters, Record, SeedCounters, due
from slacjax.seeding import random_action, run_keys, stream_seed
from slacjax.signals import StopRequests
from slacjax.steps import make_steps


# The background compile each phase waits for before its first step.
PHASE_PROGRAMS = {"pretrain": ("pretraining",), "train": ("fused update",)}


class TrainingStopped(Exception):
    """The run cannot go on (a NaN/inf loss or action, a checkpoint that cannot be written);
    the last good checkpoint is kept."""


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


@dataclasses.dataclass
class SeedFiles:
    """Where one seed's rows, curve and pictures go (the run dir itself for one seed)."""

    seed: int
    directory: pathlib.Path
    log: logger.MetricsLog


class Trainer:
    """One run: the envs, the device pytrees, the counters and the run dir's files."""

    def __init__(self, cfg: ExperimentConfig, run_dir: pathlib.Path, mesh=None):
        self.cfg, self.run_dir, self.mesh = cfg, run_dir, mesh
        self.agent_cfg = cfg.agent_config()
        self.seeds = [cfg.seed + index for index in range(cfg.seeds)]
        self.init_keys, self.act_keys, self.eval_keys, self.picture_keys = run_keys(self.seeds)
        self.envs = [evaluation.make_env(cfg, seed) for seed in self.seeds]
        self.eval_env = None
        self.action_dim = int(self.envs[0].action_space.shape[0])
        self.steps = make_steps(self.agent_cfg, self.action_dim, cfg.seeds, mesh,
                                cfg.seed_conv)
        self.pretrain_per_dispatch = cfg.pretrain_updates_per_dispatch or (
            1 if jax.default_backend() == "cpu" else 100)
        self.counters = Counters()
        self.seed_counters = [SeedCounters() for _ in self.seeds]
        self.state = self.replay = self.history = None
        self.obs = None  # the seeds' current frames [N, H, W, 3]; None at a phase's start
        self.episode_rewards: list[list[float]] = [[] for _ in self.seeds]
        self.episode_over = np.zeros(cfg.seeds, bool)  # ended this step; reset at the next
        self.metric_sum, self.metric_weight = None, 0
        self.files: list[SeedFiles] = []
        self.checkpoints = None
        self.stop = StopRequests(self.waiting_for, self.resume_point, self.waits_after)
        self.progress = logger.Progress(cfg.progress)
        self.eta = logger.RunEta()
        self.compiler = AheadOfTime()
        self.stopwatch = logger.Stopwatch()
        self.rate_mark = (time.monotonic(), 0)

    # ------------------------------------------------------------------ setup and teardown

    def start(self, resume: bool, compile_ahead: bool = True) -> None:
        """Restores the newest good checkpoint or starts fresh; opens logs and wandb."""
        self.checkpoints = checkpoint.Checkpoints(self.run_dir, keep=self.cfg.keep_checkpoints)
        if resume:
            path, self.state, self.replay, record = run_state.restore(
                self.checkpoints, self.steps, self.action_dim, self.cfg, say=say)
            self.counters, self.seed_counters = record.counters, record.seeds
            self.metric_weight = record.metric_weight
            if record.metric_sum is not None:
                self.metric_sum = {name: jnp.asarray(value, jnp.float32)
                                   for name, value in record.metric_sum.items()}
            if self.counters.phase == "done" and self.counters.env_steps < self.cfg.env_steps:
                self.counters.phase = "train"  # env_steps was raised: train on
            say(f"resumed from {path} at env step {self.counters.env_steps}")
        else:
            self.state = self.steps.init_state(self.init_keys)
            self.replay = self.steps.init_replay(self.cfg.replay_capacity)
            self.counters.wandb_id = logger.new_wandb_id()
        save_config(self.cfg, self.run_dir)
        for index, seed in enumerate(self.seeds):
            directory = seed_directory(self.run_dir, self.cfg, index)
            directory.mkdir(exist_ok=True)
            log = logger.MetricsLog(directory)
            if resume:
                log.truncate(record.log_rows[index])  # what is redone must not appear twice
            self.files.append(SeedFiles(seed, directory, log))
        if self.mesh is not None:
            # A copy on every device: adds, acts and pictures run on all alike; only the
            # sampled batches are split.
            self.state, self.replay = parallel.replicate((self.state, self.replay), self.mesh)
        if compile_ahead:
            self.compile_ahead()
        self.stopwatch = logger.Stopwatch(self.counters.wall_seconds)
        self.rate_mark = (time.monotonic(), self.counters.env_steps)
        if self.cfg.wandb.enabled:
            self.start_wandb()

    def start_wandb(self) -> None:
        config = OmegaConf.to_container(OmegaConf.load(self.run_dir / CONFIG_FILE))
        several = len(self.seeds) > 1
        for index, files in enumerate(self.files):
            files.log.wandb_run = logger.start_wandb(
                files.directory, name=f"{self.cfg.task}-seed{files.seed}", config=config,
                mode=self.cfg.wandb.mode, project=self.cfg.wandb.project,
                entity=self.cfg.wandb.entity,
                # One wandb run per seed, grouped (by default under the run dir's name).
                run_id=self.counters.wandb_id + (f"-{index}" if several else ""),
                group=self.cfg.wandb.group or (self.run_dir.name if several else None),
                concurrent=several, quiet=self.cfg.wandb.quiet)

    def compile_ahead(self) -> None:
        """Starts compiling the steps of the phases still to come."""
        phase, copy = self.counters.phase, self.steps.copy
        replay = copy(self.replay)  # one copy for both: the steps read the replay, never donate it
        if phase in ("collect", "pretrain") and self.cfg.pretrain_updates > 0:
            self.compiler.submit("pretraining", self.steps.pretrain, copy(self.state), replay,
                                 self.pretrain_per_dispatch)
        if phase != "done":
            self.compiler.submit("fused update", self.steps.train, copy(self.state), replay,
                                 self.cfg.updates_per_step)

    def close(self) -> None:
        self.compiler.close()
        self.progress.close()
        for env in (*self.envs, self.eval_env):
            if env is not None:
                env.close()
        for files in self.files:
            files.log.close()
        if self.checkpoints is not None:
            self.checkpoints.close()

    # ---------------------------------------------------------------------------- phases

    def run(self) -> int:
        """Runs the protocol to its end or to a stop request -> exit status (0, 128+signal).
        Stop requests reach it while `self.stop` is entered (signal handlers installed)."""
        phases = {"collect": self.collect, "pretrain": self.pretrain, "train": self.train}
        while self.counters.phase in phases and not self.stop.requested:
            phases[self.counters.phase]()
        self.progress.close()
        if self.stop.requested:
            path = self.save_checkpoint()
            say(f"stopped by {signal.Signals(self.stop.signum).name} at env step "
                f"{self.counters.env_steps}: saved {path}; run the same command to resume")
            return 128 + self.stop.signum
        say(f"done: {self.counters.env_steps} env steps; run dir {self.run_dir}")
        return 0

    def collect(self) -> None:
        """Uniformly random actions into the replay: `cfg.collect_steps` agent steps."""
        c, target = self.counters, self.cfg.collect_steps
        self.start_phase("collect", c.env_steps, target * self.cfg.repeat)
        while c.agent_steps < target and not self.stop.requested:
            self.begin_episodes()
            actions = np.stack([random_action(seed, c.agent_steps, self.action_dim)
                                for seed in self.seeds])
            self.step_envs(actions, training=False)
        if c.agent_steps >= target:
            self.flush_rows()
            c.phase, c.last_log, self.obs = "pretrain", 0, None
            self.save_checkpoint()  # what was collected is kept

    def pretrain(self) -> None:
        """Latent-model-only updates, `pretrain_updates_per_dispatch` per call."""
        c, total = self.counters, self.cfg.pretrain_updates
        self.start_phase("pretrain", c.pretrain_updates, total)
        self.compiler.get("pretraining")
        while c.pretrain_updates < total and not self.stop.requested:
            count = min(self.pretrain_per_dispatch, total - c.pretrain_updates)
            self.state, metrics = self.steps.pretrain(self.state, self.replay, count)
            self.accumulate(metrics, count)
            c.pretrain_updates += count
            self.advance(count)
            if due(c.pretrain_updates, c.last_log, self.cfg.pretrain_log_every):
                self.flush_rows()
            if due(c.pretrain_updates, c.last_checkpoint, self.cfg.pretrain_checkpoint_every):
                self.save_checkpoint()
        if c.pretrain_updates >= total:
            self.flush_rows()
            if total > 0:
                self.write_reconstructions()
            c.phase, c.last_log, c.last_eval = "train", c.env_steps, c.env_steps
            self.save_checkpoint()  # pretraining is the expensive part: keep it

    def train(self) -> None:
        """Per agent step: one env step with the stochastic policy and one fused update."""
        c = self.counters
        self.start_phase("train", c.env_steps, self.cfg.env_steps)
        self.compiler.get("fused update")
        while c.env_steps < self.cfg.env_steps and not self.stop.requested:
            self.begin_episodes()
            actions = self.act(self.act_keys, c.agent_steps, greedy=False)
            if (c.agent_steps - self.cfg.collect_steps) % self.cfg.update_every == 0:
                self.state, metrics = self.steps.train(self.state, self.replay,
                                                       self.cfg.updates_per_step)
                self.accumulate(metrics, 1)
            self.step_envs(actions, training=True)
        if c.env_steps >= self.cfg.env_steps:
            self.flush_rows()
            if c.last_eval != c.env_steps:
                self.evaluate()
            c.phase = "done"
            self.save_checkpoint()

    # ------------------------------------------------------------------------- env steps

    def act(self, keys: jax.Array, step: int, greedy: bool) -> np.ndarray:
        """Each seed's action for its current window; TrainingStopped if one is not finite."""
        try:
            agents = np.arange(len(self.seeds), dtype=np.int32)
            return evaluation.checked(self.steps.act(
                self.state.params, agents, self.history, keys, np.int32(step), greedy), agents)
        except evaluation.NonFiniteAction as error:
            self.stopped("action", error.agents, "(the policy's output)")

    def begin_episodes(self) -> None:
        """Resets the envs of the seeds at an episode boundary (all at a phase's start)."""
        starting = np.ones(len(self.seeds), bool) if self.obs is None else self.episode_over
        if not starting.any():
            return
        size = self.agent_cfg.image_size
        frames = (np.zeros((len(self.seeds), size, size, 3), np.uint8) if self.obs is None
                  else self.obs.copy())
        for index in np.flatnonzero(starting):
            counters = self.seed_counters[index]
            frames[index], _ = self.envs[index].reset(
                seed=stream_seed(self.seeds[index], 0, counters.episodes))
            counters.episodes += 1
        for index in np.flatnonzero(starting):
            self.episode_rewards[index] = []
        count = len(self.seeds)
        self.replay = self.steps.add(
            self.replay, frames, np.zeros((count, self.action_dim), np.float32),
            np.zeros(count, np.float32), np.zeros(count, np.float32), np.ones(count, bool),
            starting)
        if self.counters.phase == "train":
            self.history = self.steps.reset_history(None if starting.all() else self.history,
                                                    frames, starting)
        self.obs, self.episode_over = frames, np.zeros(count, bool)

    def step_envs(self, actions: np.ndarray, training: bool) -> None:
        """One agent step of every seed's env: replay, history, counters, what is due."""
        results = [env.step(action) for env, action in zip(self.envs, actions)]
        obs = np.stack([result[0] for result in results])
        rewards = np.array([result[1] for result in results], np.float64)
        terminated = np.array([result[2] for result in results], bool)
        ended = terminated | np.array([result[3] for result in results], bool)
        for index, (*_, info) in enumerate(results):
            if "physics_error" in info:
                self.counters.physics_errors += 1
                self.progress.write(f"seed {self.seeds[index]}: the simulator failed at env "
                                    f"step {self.counters.env_steps} ({info['physics_error']}); "
                                    "its episode ends there")
        count = len(self.seeds)
        self.replay = self.steps.add(self.replay, obs, actions, rewards.astype(np.float32),
                                     terminated.astype(np.float32), np.zeros(count, bool),
                                     np.ones(count, bool))
        if training:
            self.history = self.steps.push_history(self.history, actions, obs)
        self.obs = obs
        for episode_rewards, reward in zip(self.episode_rewards, rewards):
            episode_rewards.append(float(reward))
        self.after_step(max(int(result[4]["env_steps"]) for result in results), training, ended)

    def after_step(self, env_steps: int, training: bool, ended: np.ndarray) -> None:
        """Counters, then what is due: the row, the evaluation, then the checkpoint (which
        keeps everything its env step owes, so a resumed run neither redoes nor skips it)."""
        c = self.counters
        c.env_steps += env_steps
        c.agent_steps += 1
        self.advance(env_steps)
        if due(c.env_steps, c.last_log, self.cfg.log_every):
            self.flush_rows()
        if training and due(c.env_steps, c.last_eval, self.cfg.eval_every):
            self.evaluate()
        for index in np.flatnonzero(ended):
            counters = self.seed_counters[index]
            counters.last_episode_return = float(sum(self.episode_rewards[index]))
            counters.last_episode_discounted_return = mean_discounted_return(
                self.episode_rewards[index], self.agent_cfg.gamma)
        self.episode_over |= ended
        # At an agent step where every seed's episode ended, or once a whole period late
        # (seeds whose episodes never end together).
        boundary = self.episode_over.all() or due(
            c.env_steps, c.last_checkpoint + self.cfg.checkpoint_every, self.cfg.checkpoint_every)
        if boundary and due(c.env_steps, c.last_checkpoint, self.cfg.checkpoint_every):
            self.save_checkpoint()

    # ------------------------------------------------------------------- progress and ETA

    def train_agent_steps(self) -> int:
        """Agent steps the training phase will take (at the action repeat)."""
        left = max(self.cfg.env_steps - self.counters.env_steps, 0)
        return self.counters.agent_steps + -(-left // self.cfg.repeat)

    def start_phase(self, phase: str, done: int, total: int) -> None:
        """A progress bar from `done` to `total` (env steps; updates in pretraining)."""
        self.progress.start(phase, done, total)
        c = self.counters
        self.eta.start(phase, c.pretrain_updates if phase == "pretrain" else c.agent_steps)

    def advance(self, amount: int) -> None:
        """Moves the bar by `amount` and re-estimates the whole run's time left."""
        c, cfg = self.counters, self.cfg
        left = dict(collect=max(cfg.collect_steps - c.agent_steps, 0),
                    pretrain=cfg.pretrain_updates - c.pretrain_updates,
                    train=self.train_agent_steps() - max(c.agent_steps, cfg.collect_steps))
        done = c.pretrain_updates if c.phase == "pretrain" else c.agent_steps
        self.progress.advance(amount, env_step=c.env_steps,
                              run_eta=self.eta.remaining(done, left))

    # ------------------------------------------------------------------- metrics and rows

    def accumulate(self, metrics: dict, weight: int) -> None:
        if self.metric_sum is None:
            self.metric_sum = jax.tree.map(jnp.zeros_like, metrics)
        self.metric_sum = self.steps.accumulate(self.metric_sum, metrics, np.float32(weight))
        self.metric_weight += weight

    def stopped(self, what: str, agents: list[int], detail: str):
        """Raises TrainingStopped for non-finite `what` of the seeds at `agents`."""
        c, latest = self.counters, self.checkpoints.latest()
        kept = (f"the last good checkpoint is {self.checkpoints.path(latest)}"
                if latest is not None else "no checkpoint was written yet")
        seed = "" if len(self.seeds) == 1 else f" of seed {self.seeds[agents[0]]}"
        raise TrainingStopped(f"non-finite {what} {detail}{seed} in the {c.phase} phase before "
                              f"env step {c.env_steps}; stopped, {kept}")

    def mean_metrics(self) -> list[dict]:
        """Each seed's metric means since the last row ({name: float} per seed); stops the
        run on NaN/inf, naming the loss and the seed."""
        if self.metric_sum is None:
            return [{} for _ in self.seeds]
        means = {name: np.asarray(value, np.float64) / self.metric_weight
                 for name, value in jax.device_get(self.metric_sum).items()}
        bad = sorted(name for name, value in means.items() if not np.isfinite(value).all())
        if bad:
            agents = np.flatnonzero(~np.isfinite(means[bad[0]])).tolist()
            updates = int(np.asarray(jax.device_get(self.state.step))[agents[0]])
            self.stopped(", ".join(bad), agents,
                         f"({means[bad[0]][agents[0]]}, update {updates})")
        return [{name: float(value[index]) for name, value in means.items()}
                for index in range(len(self.seeds))]

    def flush_rows(self) -> None:
        """One row per seed: the means since the last row, counters, wall time, rate.
        Nothing if nothing happened since the last row."""
        c = self.counters
        position = c.pretrain_updates if c.phase == "pretrain" else c.env_steps
        if position == c.last_log and self.metric_weight == 0:
            return
        means = self.mean_metrics()
        now = time.monotonic()
        seconds, steps = now - self.rate_mark[0], c.env_steps - self.rate_mark[1]
        for files, seed_means, counters in zip(self.files, means, self.seed_counters):
            row = dict(phase=c.phase, env_step=c.env_steps, agent_step=c.agent_steps,
                       wall_time=round(self.stopwatch.seconds(), 3), **seed_means)
            if c.phase == "pretrain":
                row["pretrain_update"] = c.pretrain_updates
            else:
                row["env_steps_per_s"] = round(steps / seconds, 3) if seconds > 0 else None
                row["episode_return"] = counters.last_episode_return
                row["discounted_return"] = counters.last_episode_discounted_return
                row["entropy_uniform"] = self.action_dim * math.log(2.0)
                row["physics_errors"] = c.physics_errors
            files.log.write(row)
        self.metric_sum, self.metric_weight = None, 0
        self.rate_mark = (now, c.env_steps)
        c.last_log = position

    # ------------------------------------------------------------------------ evaluation

    def evaluate(self) -> None:
        """`eval_episodes` of each seed's stochastic and greedy policy, all seeds side by
        side; rows, curves, the log line beside the paper's return, then the pictures."""
        c, started = self.counters, time.monotonic()
        if self.eval_env is None:
            count = evaluation.side_by_side(len(self.seeds) * self.cfg.eval_episodes,
                                            self.cfg.eval_envs)
            self.eval_env = evaluation.make_eval_env(self.cfg, count)
        rows = [dict(phase="eval", env_step=c.env_steps, agent_step=c.agent_steps)
                for _ in self.seeds]
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            try:
                returns = evaluation.evaluate_seeds(
                    self.eval_env, self.steps, self.state.params, self.seeds, self.eval_keys,
                    c.evals, self.cfg.eval_episodes, greedy)
            except evaluation.NonFiniteAction as error:
                self.stopped("action", error.agents, f"(the {mode} policy in evaluation)")
            for row, seed_returns in zip(rows, returns):
                row[f"return_{mode}"] = float(np.mean(seed_returns))
                row[f"return_{mode}_std"] = float(np.std(seed_returns))
                row[f"returns_{mode}"] = [float(value) for value in seed_returns]
        paper = reference.mean_at(self.cfg.task, c.env_steps)
        for files, row in zip(self.files, rows):
            row.update(eval_seconds=round(time.monotonic() - started, 3),
                       wall_time=round(self.stopwatch.seconds(), 3), paper_return=paper)
            files.log.write(row)
            logged = logger.read_rows(files.directory)
            title = f"{self.cfg.task}, seed {files.seed}"
            plots.learning_curve(logged, files.directory / CURVE_FILE, title=title,
                                 task=self.cfg.task)
            plots.diagnostics(logged, files.directory / DIAGNOSTICS_FILE, title=title)
        if len(self.seeds) > 1:
            plots.seeds_learning_curve(
                [logger.read_rows(files.directory) for files in self.files],
                self.run_dir / CURVE_FILE, task=self.cfg.task,
                title=f"{self.cfg.task}, seeds {self.seeds[0]}-{self.seeds[-1]}: "
                      "mean over seeds, 95% bootstrap CI")
        c.evals += 1
        c.last_eval = c.env_steps
        stochastic = float(np.mean([row["return_stochastic"] for row in rows]))
        greedy = float(np.mean([row["return_greedy"] for row in rows]))
        beside = "" if paper is None else f"; SLAC paper {paper:.0f}"
        self.progress.write(f"eval at env step {c.env_steps}: return {stochastic:.1f} "
                            f"stochastic, {greedy:.1f} greedy{beside}")
        self.progress.eval_done(stochastic)
        self.write_reconstructions()

    def write_reconstructions(self) -> None:
        """Per seed, ground truth, posterior reconstruction and prior imagination of one
        replay sequence (PNG and GIF in its media dir)."""
        c = self.counters
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(
            self.picture_keys, c.env_steps + c.pretrain_updates)
        truth, posterior, prior = (np.asarray(images) for images in self.steps.reconstruct(
            self.state.params.latent, self.replay, keys))
        name = f"reconstruction_{c.phase}_{c.env_steps:09d}"
        for index, files in enumerate(self.files):
            media = files.directory / MEDIA_DIR
            media.mkdir(exist_ok=True)
            plots.reconstruction_strip(
                plots.strip_rows(truth[index], posterior[index], prior[index]),
                media / f"{name}.png", media / f"{name}.gif",
                title=f"{self.cfg.task} at env step {c.env_steps}: truth / posterior / prior "
                      "from frame 0")

    # ------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> pathlib.Path:
        """Checks the metrics since the last row first: a NaN state is never saved."""
        c = self.counters
        sums = None
        if self.metric_sum is not None:
            self.mean_metrics()
            sums = {name: np.asarray(value).tolist()
                    for name, value in jax.device_get(self.metric_sum).items()}
        c.last_checkpoint = c.pretrain_updates if c.phase == "pretrain" else c.env_steps
        c.wall_seconds = self.stopwatch.seconds()
        record = Record(c, self.seed_counters, [files.log.rows_written for files in self.files],
                        sums, self.metric_weight)
        try:
            return run_state.save(self.checkpoints, self.state, self.replay, record,
                                  self.action_dim, self.cfg)
        except checkpoint.CheckpointWriteError as error:
            raise TrainingStopped(str(error)) from error

    def waiting_for(self) -> str:
        """What a stop request waits for before its checkpoint: the compile the current
        phase is blocked on, else the phase's current step."""
        compiling = self.compiler.running(PHASE_PROGRAMS.get(self.counters.phase, ()))
        return compiling or {"pretrain": "the current pretraining dispatch",
                             "train": "the current agent step"}.get(self.counters.phase,
                                                                     "the current env step")

    def waits_after(self) -> str | None:
        """A compile for a later phase, which `close` waits for after the checkpoint."""
        needed = PHASE_PROGRAMS.get(self.counters.phase, ())
        return self.compiler.running([name for name in self.compiler.programs
                                      if name not in needed])

    def resume_point(self) -> str:
        """What the next run resumes from (read from disk: a save may be under way)."""
        latest = self.checkpoints.latest() if self.checkpoints is not None else None
        if latest is None:
            return "nothing: it starts over"
        return str(self.checkpoints.path(latest))


def mean_discounted_return(rewards: list[float], gamma: float) -> float:
    """The discounted return-to-go G_t = Σ_k γ^k r_t+k of each step of an episode, averaged
    over its steps (rewards [T] -> float; 0 for an empty episode)."""
    to_go, total = 0.0, 0.0
    for reward in reversed(rewards):
        to_go = reward + gamma * to_go
        total += to_go
    return total / len(rewards) if rewards else 0.0


def say(line: str) -> None:
    print(line, flush=True)


def run(cfg: ExperimentConfig) -> int:
    """Checks, then runs the protocol for `cfg` -> exit status.

    Raises LaunchError for bad input (before anything in an existing run dir is touched)
    and TrainingStopped when the run cannot go on.
    """
    mesh = device_mesh(cfg)
    evaluation.ensure_gl()
    run_dir: RunDir = open_run_dir(cfg, say=say)
    try:
        platform = jax.devices()[0].platform
        seeds = (f"seed {cfg.seed}" if cfg.seeds == 1 else
                 f"seeds {cfg.seed}-{cfg.seed + cfg.seeds - 1} in one process")
        devices = "" if mesh is None else f" ×{mesh.size}"
        say(f"run dir {run_dir.path}: {cfg.task}, {seeds}, {cfg.env_steps} env steps on "
            f"{platform}{devices}")
        if platform == "cpu" and cfg.env_steps > 10_000:
            say("training on CPU is slow (about a second per update): see the ETA")
        trainer = Trainer(cfg, run_dir.path, mesh)
        with trainer.stop:  # also while closing: a second Ctrl-C must not wait for a compile
            try:
                trainer.start(run_dir.resume)
                return trainer.run()
            finally:
                trainer.close()
    finally:
        run_dir.close()
