"""The SLAC protocol (docs/algorithm.md §5) for N seeds at once: collect, pretrain, train, evaluate.

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

import os
import pathlib
import signal
import sys

import jax
import numpy as np

from slacjax import checkpoint, durable, evaluation, logger, parallel, run_state
from slacjax.compile_ahead import PhasePrograms
from slacjax.config import ExperimentConfig
from slacjax.episodes import TrainingEpisodes
from slacjax.metrics import NonFiniteMetric, PhaseRows
from slacjax.progress import RunProgress
from slacjax.reports import NonFinitePolicy, Reports
from slacjax.run_dir import LaunchError, RunDir, open_run_dir, save_config
from slacjax.run_state import Counters, Record, due
from slacjax.seed_files import RunFiles
from slacjax.seeding import random_action, run_keys
from slacjax.signals import StopRequests
from slacjax.steps import make_steps


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


class Trainer:
    """One run: the protocol's loop, its device pytrees (state, replay) and counters, and
    the rooms it drives: the seeds' episodes, phase rows, reports, files and checkpoints."""

    def __init__(self, cfg: ExperimentConfig, run_dir: pathlib.Path, mesh=None):
        self.cfg, self.run_dir, self.mesh = cfg, run_dir, mesh
        self.seeds = [cfg.seed + index for index in range(cfg.seeds)]
        self.init_keys, self.act_keys, self.eval_keys, self.picture_keys = run_keys(self.seeds)
        agent_cfg = cfg.agent_config()
        envs = [evaluation.make_env(cfg, seed) for seed in self.seeds]
        self.action_dim = int(envs[0].action_space.shape[0])
        self.steps = make_steps(agent_cfg, self.action_dim, cfg.seeds, mesh, cfg.seed_conv)
        self.progress = RunProgress(cfg)
        self.episodes = TrainingEpisodes(envs, self.seeds, self.steps, agent_cfg,
                                         warn=self.progress.write)
        self.reports = Reports(cfg, self.steps, self.seeds, self.eval_keys, self.picture_keys,
                               self.progress)
        self.pretrain_per_dispatch = cfg.pretrain_updates_per_dispatch or (
            1 if jax.default_backend() == "cpu" else 100)
        self.counters = Counters()
        self.state = self.replay = None
        self.phase_rows = PhaseRows(self.steps, cfg.seeds, self.action_dim)
        self.files: RunFiles | None = None
        self.checkpoints = None
        self.compiler = PhasePrograms(say=self.progress.write, timed=self.progress.eta.timed)
        self.stop = StopRequests(lambda: self.compiler.waiting_for(self.counters.phase),
                                 lambda: run_state.resume_point(self.checkpoints),
                                 lambda: self.compiler.waits_after(self.counters.phase),
                                 on_request=self.compiler.abandon, can_save=self.has_news)
        self.stopwatch = logger.Stopwatch()

    # ------------------------------------------------------------------ setup and teardown

    def start(self, resume: bool, compile_ahead: bool = True) -> None:
        """Restores the newest good checkpoint or starts fresh; opens logs and wandb."""
        self.checkpoints = checkpoint.Checkpoints(self.run_dir, keep=self.cfg.keep_checkpoints)
        if resume:
            log_rows = self.restore()
        else:
            self.state = self.steps.init_state(self.init_keys)
            self.replay = self.steps.init_replay(self.cfg.replay_capacity)
            self.counters.wandb_id, log_rows = logger.new_wandb_id(), None
        save_config(self.cfg, self.run_dir)
        self.files = RunFiles(self.run_dir, self.cfg, self.seeds, log_rows)
        if self.mesh is not None:
            # A copy on every device: adds, acts and pictures run on all alike; only the
            # sampled batches are split.
            self.state, self.replay = parallel.replicate((self.state, self.replay), self.mesh)
        if compile_ahead:
            self.compiler.submit_phases(self.counters.phase, self.steps, self.state, self.replay,
                                        self.cfg, self.pretrain_per_dispatch)
        self.stopwatch = logger.Stopwatch(self.counters.wall_seconds)
        self.phase_rows.mark_rate(self.counters.env_steps)
        if self.cfg.wandb.enabled:
            self.files.start_wandb(self.counters.wandb_id)

    def restore(self) -> list[int]:
        """The run as its newest good checkpoint kept it -> the rows each seed had logged."""
        path, self.state, self.replay, record = run_state.restore(
            self.checkpoints, self.steps, self.action_dim, self.cfg, say=say)
        self.counters, self.episodes.counters = record.counters, record.seeds
        self.phase_rows.restore(record.metric_sum, record.metric_weight)
        if self.counters.phase == "done" and self.counters.env_steps < self.cfg.env_steps:
            self.counters.phase = "train"  # env_steps was raised: train on
        say(f"resumed from {path} at env step {self.counters.env_steps}")
        return record.log_rows

    def has_news(self) -> bool:
        """Whether the run has got anywhere since its last checkpoint (else a stop request
        exits at once: the checkpoint has it all)."""
        c = self.counters
        return self.files is not None and c.position() != c.last_checkpoint

    def close(self) -> None:
        self.compiler.close()
        self.progress.close()
        self.episodes.close()
        self.reports.close()
        if self.files is not None:
            self.files.close()
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
        self.progress.start_phase(c, target * self.cfg.repeat)
        while c.agent_steps < target and not self.stop.requested:
            self.begin_episodes()
            actions = np.stack([random_action(seed, c.agent_steps, self.action_dim)
                                for seed in self.seeds])
            self.step_envs(actions, training=False)
        if c.agent_steps >= target:
            self.flush_rows()
            c.phase, c.last_log = "pretrain", 0
            self.episodes.cut()  # training begins new episodes
            self.save_checkpoint()  # what was collected is kept

    def pretrain(self) -> None:
        """Latent-model-only updates, `pretrain_updates_per_dispatch` per call."""
        c, total = self.counters, self.cfg.pretrain_updates
        self.progress.start_phase(c, total)
        self.compiler.get("pretraining")
        while c.pretrain_updates < total and not self.stop.requested:
            count = min(self.pretrain_per_dispatch, total - c.pretrain_updates)
            self.state, metrics = self.steps.pretrain(self.state, self.replay, count)
            self.phase_rows.add(metrics, count)
            c.pretrain_updates += count
            self.progress.advance_run(c, count)
            if due(c.pretrain_updates, c.last_log, self.cfg.pretrain_log_every):
                self.flush_rows()
            if due(c.pretrain_updates, c.last_checkpoint, self.cfg.pretrain_checkpoint_every):
                self.save_checkpoint()
        if c.pretrain_updates >= total:
            self.flush_rows()
            if total > 0:
                self.reports.write_reconstructions(self.files, self.state.params.latent,
                                                   self.replay, c)
            c.phase, c.last_log, c.last_eval = "train", c.env_steps, c.env_steps
            self.save_checkpoint()  # pretraining is the expensive part: keep it

    def train(self) -> None:
        """Per agent step: one env step with the stochastic policy and one fused update."""
        c = self.counters
        self.progress.start_phase(c, self.cfg.env_steps)
        self.compiler.get("fused update")
        while c.env_steps < self.cfg.env_steps and not self.stop.requested:
            self.begin_episodes()
            actions = self.act(self.act_keys, c.agent_steps, greedy=False)
            if (c.agent_steps - self.cfg.collect_steps) % self.cfg.update_every == 0:
                self.state, metrics = self.steps.train(self.state, self.replay,
                                                       self.cfg.updates_per_step)
                self.phase_rows.add(metrics, 1)
            self.step_envs(actions, training=True)
        if c.env_steps >= self.cfg.env_steps:
            self.flush_rows()
            if c.last_eval != c.env_steps:
                self.evaluate()
            c.phase = "done"
            self.save_checkpoint()

    def after_step(self, env_steps: int, training: bool, ended: np.ndarray) -> None:
        """Counters, then what is due: the row, the evaluation, then the checkpoint (which
        keeps everything its env step owes, so a resumed run neither redoes nor skips it)."""
        c = self.counters
        c.env_steps += env_steps
        c.agent_steps += 1
        self.progress.advance_run(c, env_steps)
        if due(c.env_steps, c.last_log, self.cfg.log_every):
            self.flush_rows()
        if training and due(c.env_steps, c.last_eval, self.cfg.eval_every):
            self.evaluate()
        self.episodes.end(ended)
        # At an agent step where every seed's episode ended, or once a whole period late
        # (seeds whose episodes never end together).
        boundary = self.episodes.over.all() or due(
            c.env_steps, c.last_checkpoint + self.cfg.checkpoint_every, self.cfg.checkpoint_every)
        if boundary and due(c.env_steps, c.last_checkpoint, self.cfg.checkpoint_every):
            self.save_checkpoint()

    # ------------------------------------------------------------------------- env steps

    def act(self, keys: jax.Array, step: int, greedy: bool) -> np.ndarray:
        """Each seed's action for its current window; TrainingStopped if one is not finite."""
        agents = np.arange(len(self.seeds), dtype=np.int32)
        actions = self.steps.act(self.state.params, agents, self.episodes.history, keys,
                                 np.int32(step), greedy)
        try:
            return evaluation.checked(actions, agents)
        except evaluation.NonFiniteAction as error:
            self.stopped("action", error.agents, "(the policy's output)")

    def begin_episodes(self) -> None:
        """New episodes where the last ones ended (all at a phase's start)."""
        self.replay = self.episodes.begin(self.replay, acting=self.counters.phase == "train")

    def step_envs(self, actions: np.ndarray, training: bool) -> None:
        """One agent step of every seed's env, then the counters and what is due."""
        self.replay, step = self.episodes.step(self.replay, actions, self.counters.env_steps,
                                               acting=training)
        self.counters.physics_errors += step.physics_errors
        self.after_step(step.env_steps, training, step.ended)

    # ------------------------------------------------------------------- rows and reports

    def mean_metrics(self) -> list[dict]:
        """Each seed's metric means since the last row ({name: float} per seed); stops the
        run on NaN/inf, naming the loss and the seed."""
        try:
            return self.phase_rows.means(self.state.step)
        except NonFiniteMetric as error:
            self.stopped(", ".join(error.names), error.agents, error.detail)

    def flush_rows(self) -> None:
        """One row per seed (`PhaseRows.take`); nothing if nothing happened since the last."""
        c = self.counters
        if c.position() == c.last_log and self.phase_rows.weight == 0:
            return
        means = self.mean_metrics()
        self.files.write_rows(self.phase_rows.take(c, self.episodes.counters, means,
                                                   self.stopwatch))
        c.last_log = c.position()

    def evaluate(self) -> None:
        """Evaluation number `counters.evals` (`Reports.evaluate`), then the pictures."""
        c = self.counters
        try:
            self.reports.evaluate(self.files, self.state.params, c, self.stopwatch)
        except NonFinitePolicy as error:
            self.stopped("action", error.agents, f"(the {error.policy} policy in evaluation)")
        c.evals += 1
        c.last_eval = c.env_steps
        self.reports.write_reconstructions(self.files, self.state.params.latent, self.replay, c)

    # ------------------------------------------------------------- stops and checkpoints

    def stopped(self, what: str, agents: list[int], detail: str):
        """Raises TrainingStopped for non-finite `what` of the seeds at `agents`."""
        c, kept = self.counters, run_state.last_good(self.checkpoints)
        seed = "" if len(self.seeds) == 1 else f" of seed {self.seeds[agents[0]]}"
        raise TrainingStopped(f"non-finite {what} {detail}{seed} in the {c.phase} phase before "
                              f"env step {c.env_steps}; stopped, {kept}")

    def save_checkpoint(self) -> pathlib.Path:
        """Checks the metrics since the last row first: a NaN state is never saved."""
        self.mean_metrics()
        c = self.counters
        c.last_checkpoint = c.position()
        c.wall_seconds = self.stopwatch.seconds()
        # Every row the checkpoint counts is on disk before it is.
        record = Record(c, self.episodes.counters, self.files.synced_rows(),
                        self.phase_rows.kept(), self.phase_rows.weight)
        self.progress.doing("saving a checkpoint")
        try:
            return run_state.save(self.checkpoints, self.state, self.replay, record,
                                  self.action_dim, self.cfg)
        except checkpoint.CheckpointWriteError as error:
            raise TrainingStopped(str(error)) from error
        finally:
            self.progress.doing(None)


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
        if cfg.progress and sys.stderr.isatty():  # before the first bar: envs, compiles, …
            print(f"setting up: the envs, the agent's programs (compiled on a first run, then "
                  f"read from {os.environ.get('JAX_COMPILATION_CACHE_DIR', 'the cache')})"
                  f"{', reading the checkpoint' if run_dir.resume else ''}", file=sys.stderr,
                  flush=True)
        trainer = Trainer(cfg, run_dir.path, mesh)
        with trainer.stop:  # also while closing: a second Ctrl-C must not wait for a compile
            try:
                trainer.start(run_dir.resume)
                return trainer.run()
            except durable.WriteError as error:  # a full disk: rows, pictures, config
                raise TrainingStopped(f"{error}; {run_state.last_good(trainer.checkpoints)}") \
                    from None
            finally:
                trainer.close()
    finally:
        run_dir.close()
