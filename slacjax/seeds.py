"""N independent agents in one process: `python -m experiments.run task=cheetah_run seeds=5`.

`SeedsTrainer` is the protocol of `slacjax.trainer.Trainer` with the agents' training states
and replays stacked along a leading [N] axis (`slacjax.parallel`): one vmapped update
dispatch, one vmapped policy call and one replay write per agent step serve every seed.

Seed s of a run with seed S is seeded with S + s wherever a single-seed run uses its seed:
network init and the state's RNG, env resets (stream (S + s, 0, episode)), random actions
((S + s, agent step)), action keys and evaluation episodes. So each seed does what the run
`seed=S+s seeds=1` does, up to the float rounding of a batched computation; its collection
phase (frames, actions, rewards) is the same exactly.

Environments: one in this process per seed, stepped one after another while the device runs
the update of all seeds. Each seed's episodes are reset when they end with the reset seed
of their own stream, which gymnasium's vector envs do not allow (they autoreset from the
previous step's end, with the env's own RNG); workers would also cost a process and a GL
context per seed. The host's share per agent step is N env steps (~1.5 ms each on the GPU
host, BENCHMARKS.md), which overlaps the update of N seeds.

Episodes of different seeds end at different agent steps on tasks with terminations
(Hopper, Walker2d from gym): a seed whose episode ended starts its next one at the next
agent step, the others go on. The run's clock `env_steps` advances per agent step by the
most env steps any seed took (the action repeat, unless every seed's episode ended inside
it); progress, rows, evaluation and the end of training follow that clock.

Evaluation runs every seed's episodes side by side: one pool of `eval_env_count` envs (no more
workers than a single-seed run starts; see `trainer.eval_env_count`) and one policy call per
step, each env acting with its episode's seed. Each episode keeps its own reset seed and key
(stream (S + s, 2, evaluation, greedy, episode)), so a seed's returns are those it would get
evaluated alone, up to the float rounding of the batched policy.

Periodic checkpoints are taken at an agent step where every seed's episode has just ended
(always so on DMC, whose episodes all have the same length); if that has not happened by the
next multiple of `checkpoint_every`, it is taken there, mid-episode, and a run resumed from
it restarts the episodes in progress (as after a SIGTERM checkpoint).

Run dir: `config.yaml`, `checkpoints/` (the stacked state, the stacked replay and the
counters of all seeds), `learning_curve.png` (evaluation returns, mean ± std across seeds),
and per seed `seed<S+s>/` with its `metrics.jsonl`, `learning_curve.png`, `media/` and
`wandb/`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from slacjax import episodes, logger, parallel, plots, policy
from slacjax import latent as latent_lib
from slacjax import replay as replay_lib
from slacjax.config import AgentConfig, ExperimentConfig
from slacjax.trainer import (CURVE_FILE, SeedView, Trainer, due, make_env, random_action,
                             run_keys, stream_seed)


@dataclasses.dataclass
class SeedCounters:
    """What a single-seed run keeps in its Counters but is per seed here."""

    episodes: int = 0  # training episodes started: the next one's index
    last_episode_return: float | None = None


@functools.partial(jax.jit, static_argnums=(3, 4))
def _restart_histories(histories, first_frames, starting, action_dim: int,
                       sequence_length: int) -> policy.History:
    """The windows of the `starting` seeds reset to their first frames, the others kept."""
    fresh = episodes.reset_histories(first_frames, action_dim, sequence_length)
    return jax.tree.map(
        lambda new, old: jnp.where(starting.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
        fresh, histories)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _reconstruct_seeds(latent_params, replays, keys, cfg: AgentConfig):
    """Per seed, one sequence of its replay: (truth, posterior, prior) frames [N, 1, T, ...]."""
    def one(params, replay, key):
        batch = replay_lib.sample(replay, key, 1, cfg.sequence_length)
        posterior, prior = latent_lib.reconstruct_and_imagine(params, batch, key, cfg=cfg,
                                                              context=1)
        return batch.frames, posterior, prior

    return jax.vmap(one)(latent_params, replays, keys)


def abstract_states(agent_cfg: AgentConfig, action_dim: int, num_seeds: int):
    """The stacked TrainStates' shapes and dtypes, without computing them (for restoring)."""
    keys = jax.ShapeDtypeStruct((num_seeds, 2), jnp.uint32)
    return jax.eval_shape(functools.partial(parallel.init_states, agent_cfg, action_dim), keys)


class SeedsTrainer(Trainer):
    """`cfg.seeds` agents trained side by side: Trainer's protocol, state and replay stacked."""

    def __init__(self, cfg: ExperimentConfig, run_dir):
        super().__init__(cfg, run_dir)
        self.pretrain_steps = functools.partial(parallel.pretrain_steps_seeds,
                                                seed_conv=cfg.seed_conv)
        self.train_steps = functools.partial(parallel.train_steps_seeds, seed_conv=cfg.seed_conv)
        self.seeds = [cfg.seed + index for index in range(cfg.seeds)]
        # Each key stacked [N, 2]: seed s's are those of a single-seed run with seed S + s.
        (self.init_key, self.act_key, self.eval_key,
         self.picture_key) = (jnp.stack(keys) for keys in zip(*map(run_keys, self.seeds)))
        self.envs = []
        self.seed_counters = [SeedCounters() for _ in self.seeds]
        self.episode_return = np.zeros(cfg.seeds)
        self.episode_over = np.zeros(cfg.seeds, bool)  # ended this step; reset at the next

    # ------------------------------------------------------------------ setup and teardown

    def seed_views(self) -> list[SeedView]:
        return [SeedView(index, seed, self.run_dir / f"seed{seed}", self.eval_key[index],
                         self.picture_key[index]) for index, seed in enumerate(self.seeds)]

    def make_envs(self) -> None:
        self.envs = [make_env(self.cfg, seed) for seed in self.seeds]
        self.action_dim = int(self.envs[0].action_space.shape[0])

    def init_training(self) -> None:
        self.state = parallel.init_states(self.agent_cfg, self.action_dim, self.init_key)
        self.replay = parallel.init_replays(len(self.seeds), self.cfg.replay_capacity,
                                            self.action_dim, self.agent_cfg.image_size)

    def abstract_trees(self, action_dim: int) -> tuple:
        state = abstract_states(self.agent_cfg, action_dim, len(self.seeds))
        replay = jax.eval_shape(functools.partial(
            parallel.init_replays, len(self.seeds), self.cfg.replay_capacity, action_dim,
            self.agent_cfg.image_size))
        return state, replay

    def wandb_settings(self, view: SeedView) -> dict:
        # One wandb run per seed, grouped (by default under the run dir's name).
        return dict(run_id=f"{self.counters.wandb_id}-{view.index}",
                    group=self.cfg.wandb.group or self.run_dir.name, concurrent=True)

    def checkpoint_meta(self) -> dict:
        return dict(log_rows=[view.log.rows_written for view in self.views],
                    seed_counters=[dataclasses.asdict(counters)
                                   for counters in self.seed_counters])

    def restore_meta(self, meta: dict) -> None:
        counters = [SeedCounters(**values) for values in meta["seed_counters"]]
        if len(counters) != len(self.seeds) or len(meta["log_rows"]) != len(self.seeds):
            raise ValueError(f"{len(counters)} seeds' counters, {len(self.seeds)} expected")
        self.seed_counters = counters

    def close(self) -> None:
        for env in self.envs:
            env.close()
        super().close()

    # ------------------------------------------------------------------------- env steps

    def random_action(self) -> np.ndarray:
        return np.stack([random_action(seed, self.counters.agent_steps, self.action_dim)
                         for seed in self.seeds])

    def policy_action(self) -> np.ndarray:
        return np.asarray(episodes.policy_actions(
            self.state.params, self.history, self.act_key, np.int32(self.counters.agent_steps),
            False, self.agent_cfg, stacked_params=True))

    def begin_episode_if_needed(self) -> None:
        """Resets the envs of the seeds at an episode boundary (all of them after `obs` was
        cleared: at a phase's start or a resume)."""
        starting = np.ones(len(self.seeds), bool) if self.obs is None else self.episode_over
        if not starting.any():
            return
        size = self.agent_cfg.image_size
        frames = np.zeros((len(self.seeds), size, size, 3), np.uint8) if self.obs is None \
            else self.obs.copy()
        for index in np.flatnonzero(starting):
            counters = self.seed_counters[index]
            frames[index], _ = self.envs[index].reset(
                seed=stream_seed(self.seeds[index], 0, counters.episodes))
            counters.episodes += 1
            self.counters.episodes += 1
        self.episode_return[starting] = 0.0
        count = len(self.seeds)
        self.replay = parallel.add_seeds_where(
            self.replay, frames, np.zeros((count, self.action_dim), np.float32),
            np.zeros(count, np.float32), np.zeros(count, np.float32), np.ones(count, bool),
            starting)
        if self.counters.phase == "train":
            if starting.all():
                self.history = episodes.reset_histories(frames, self.action_dim,
                                                        self.agent_cfg.sequence_length)
            else:
                self.history = _restart_histories(self.history, frames, starting,
                                                  self.action_dim,
                                                  self.agent_cfg.sequence_length)
        self.obs, self.episode_over = frames, np.zeros(count, bool)

    def step_env(self, actions: np.ndarray, training: bool) -> None:
        """One agent step of every seed's env: replays, histories, then `after_env_step`."""
        steps = [env.step(action) for env, action in zip(self.envs, actions)]
        obs = np.stack([step[0] for step in steps])
        rewards = np.array([step[1] for step in steps], np.float64)
        terminated = np.array([step[2] for step in steps], bool)
        truncated = np.array([step[3] for step in steps], bool)
        self.replay = parallel.add_seeds(self.replay, obs, actions, rewards.astype(np.float32),
                                         terminated.astype(np.float32),
                                         np.zeros(len(self.seeds), bool))
        if training:
            self.history = episodes.push_histories(self.history, actions, obs)
        self.obs = obs
        self.episode_return += rewards
        self.after_env_step(max(int(step[4]["env_steps"]) for step in steps), training,
                            terminated | truncated)

    def end_episodes(self, ended: np.ndarray) -> bool:
        """A periodic checkpoint may be taken when every seed is at an episode boundary, or
        anywhere once it is a whole period late (seeds whose episodes never end together)."""
        for index in np.flatnonzero(ended):
            self.seed_counters[index].last_episode_return = float(self.episode_return[index])
        self.episode_over |= ended
        c = self.counters
        return bool(self.episode_over.all()) or due(c.env_steps, c.last_checkpoint
                                                    + self.cfg.checkpoint_every,
                                                    self.cfg.checkpoint_every)

    # ------------------------------------------------------------------- metrics and rows

    def seed_metrics(self, means: dict) -> list[dict]:
        return [{key: values[index] for key, values in means.items()}
                for index in range(len(self.seeds))]

    def episode_returns(self) -> list[float | None]:
        return [counters.last_episode_return for counters in self.seed_counters]

    # ------------------------------------------------------------------------ evaluation

    def eval_params(self) -> tuple:
        return self.state.params, True

    def plot_seeds(self) -> None:
        plots.seeds_learning_curve(
            [logger.read_rows(view.directory) for view in self.views], self.run_dir / CURVE_FILE,
            title=f"{self.cfg.task}, seeds {self.seeds[0]}-{self.seeds[-1]}: "
                  "mean ± std across seeds")

    def reconstruction_strips(self, step: int) -> list[np.ndarray]:
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(self.picture_key, step)
        truth, posterior, prior = (np.asarray(images) for images in _reconstruct_seeds(
            self.state.params.latent, self.replay, keys, cfg=self.agent_cfg))
        return [plots.strip_rows(truth[index, 0], posterior[index, 0], prior[index, 0])
                for index in range(len(self.seeds))]
