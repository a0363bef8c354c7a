"""Typed configuration: the agent (model, losses, optimisers) and the training protocol.

Defaults are the paper's (docs/algorithm.md §2–§5). Per-task values (action repeat, decoder
variance) come from the one task table, `slacjax.tasks`. `AgentConfig` is hashable so that
jitted functions take it as a static argument: changing it recompiles, changing data never
does.
"""

from __future__ import annotations

import dataclasses
import typing

from omegaconf import OmegaConf

from slacjax.tasks import get_task

MAX_SEED = 2**32 - 1  # the simulators' seeds are below 2**32; seed + seeds - 1 must be too

# How a multi-seed program computes convolutions whose weights differ per seed (the strategies
# of `slacjax.networks`: the same function, different speed; BENCHMARKS.md compares them).
SEED_CONVS = ("grouped", "loop", "patches")
DEFAULT_SEED_CONV = "loop"


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything the jitted model and update step depend on (docs/algorithm.md §2–§5)."""

    image_size: int = 64
    feature_dim: int = 256
    z1_dim: int = 32
    z2_dim: int = 256
    hidden_dim: int = 256
    decoder_var: float = 0.1
    sequence_length: int = 8
    batch_sac: int = 256
    batch_latent: int = 32
    # docs/algorithm.md §5: the latent batch is the first `batch_latent` of the SAC batch (the
    # authors' choice);
    # True samples a separate latent batch (the PyTorch port's choice).
    separate_latent_batch: bool = False
    gamma: float = 0.99
    tau: float = 0.005
    lr_latent: float = 1e-4
    lr_critic: float = 3e-4
    lr_actor: float = 3e-4
    lr_alpha: float = 3e-4
    # Global-norm clip of the latent model's gradient before Adam; 0 = none (the paper's).
    # At lr_latent 1e-3 one burst of unseen states (a first caught episode) can blow the
    # model up; clipping bounds what such a burst does to Adam's moments.
    latent_grad_clip: float = 0.0
    # Learned temperature by default (log α starts at log(init_alpha)); False keeps α = init_alpha.
    learn_alpha: bool = True
    init_alpha: float = 1.0
    # Compute dtype of the conv encoder/decoder ("float32" or "bfloat16"); parameters stay float32.
    dtype: str = "float32"

    def __post_init__(self):
        positive = ("image_size", "feature_dim", "z1_dim", "z2_dim", "hidden_dim",
                    "sequence_length", "batch_sac", "batch_latent")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.sequence_length < 2:
            raise ValueError("sequence_length must be at least 2 (the policy's window holds "
                             f"sequence_length - 1 past actions), got {self.sequence_length}")
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        for name in ("lr_latent", "lr_critic", "lr_actor", "lr_alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.image_size != 64:
            raise ValueError("the SLAC encoder/decoder are built for 64x64 frames "
                             f"(image_size=64), got {self.image_size}")
        if not self.separate_latent_batch and self.batch_latent > self.batch_sac:
            raise ValueError(f"batch_latent ({self.batch_latent}) is taken from the SAC batch and "
                             f"cannot exceed batch_sac ({self.batch_sac}); or set "
                             "separate_latent_batch=true")
        if self.decoder_var <= 0:
            raise ValueError(f"decoder_var must be positive, got {self.decoder_var}")
        if self.latent_grad_clip < 0:
            raise ValueError(f"latent_grad_clip must be 0 (off) or positive, "
                             f"got {self.latent_grad_clip}")
        if self.init_alpha <= 0:
            raise ValueError(f"init_alpha must be positive, got {self.init_alpha}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")

    @property
    def z_dim(self) -> int:
        return self.z1_dim + self.z2_dim


def agent_config_for_task(task: str, **overrides) -> AgentConfig:
    """The agent defaults with the task's decoder variance, then `overrides` on top."""
    values = dict(decoder_var=get_task(task).decoder_var)
    values.update(overrides)
    return AgentConfig(**values)


def agent_field_types() -> dict[str, type]:
    """AgentConfig's field types, resolved (the module's annotations are strings)."""
    return typing.get_type_hints(AgentConfig)


# The command-line view of AgentConfig: every field optional, None = the default (for
# decoder_var: the task's). Derived from AgentConfig so the two can never drift apart.
AgentOverrides = dataclasses.make_dataclass(
    "AgentOverrides",
    [(name, typing.Optional[kind], dataclasses.field(default=None))
     for name, kind in agent_field_types().items()],
)


@dataclasses.dataclass
class WandbConfig:
    """Weights & Biases: on and offline by default (sync later with `wandb sync`), online by
    `wandb.mode=online`. Imported only when enabled; a run goes on without it if it is absent."""

    enabled: bool = True
    mode: str = "offline"
    project: str = "slacjax"
    entity: typing.Optional[str] = None
    group: typing.Optional[str] = None
    # wandb's own banner, sync hints and run summary; the run's own output says where its
    # files are.
    quiet: bool = True

    def __post_init__(self):
        if self.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb.mode must be offline, online or disabled, got {self.mode!r}")


def seed_dir(seed, seeds) -> str:
    """The default run dir's last part: `seed<seed>`, or `seeds<first>-<last>` for several."""
    seed, seeds = int(seed), int(seeds)
    return f"seed{seed}" if seeds == 1 else f"seeds{seed}-{seed + seeds - 1}"


# `${seed_dir:${seed},${seeds}}` in the run dir's default (and in presets).
OmegaConf.register_new_resolver("seed_dir", seed_dir, replace=True)


@dataclasses.dataclass
class TrainConfig:
    """The protocol and the run (docs/algorithm.md §5). Progress is counted in env steps (agent
    steps × action repeat); the replay and the random collection count transitions (agent steps).
    """

    task: str = "cheetah_run"
    seed: int = 0
    # Independent agents trained together in one process (states and replays stacked, one
    # vmapped update, one env each): seed s of them uses seed + s for its env resets, random
    # actions, evaluations and network init, as a run with that seed would. Its metrics,
    # curve and media go to <run_dir>/seed<seed + s>/; one checkpoint holds all of them.
    # 1: the single-seed trainer and run dir.
    seeds: int = 1
    # One agent's update on several devices, data parallel: "all" local devices or a count of
    # them. Each sampled batch is split over the devices (batch_sac and batch_latent must
    # divide by their number), the state and the replay are copied on each; the results equal
    # one device's up to the order of floating-point sums. Not part of a run's identity: a run
    # may resume on another number of devices.
    devices: str = "1"
    # With seeds > 1, how the seeds' convolutions are computed (SEED_CONVS; the same numbers,
    # different speed): "loop", one ordinary convolution per seed, or "patches" / "grouped".
    seed_conv: str = DEFAULT_SEED_CONV
    run_dir: str = "runs/${task}/${seed_dir:${seed},${seeds}}"  # e.g. seed0, or seeds0-4
    overwrite: bool = False
    env_steps: int = 1_000_000  # total, random collection included
    # Random collection: 10,000 env steps (10,000 / action repeat agent steps), as the SLAC
    # paper's curves show; collect_agent_steps, when set, counts agent steps instead (the
    # released code's and the PyTorch port's 10,000 agent steps).
    collect_env_steps: int = 10_000
    collect_agent_steps: typing.Optional[int] = None
    replay_capacity: int = 100_000
    pretrain_updates: int = 100_000
    # Latent updates per jitted call; None: 1 on a CPU (XLA:CPU runs convolutions inside a
    # loop ~10x slower), 100 on an accelerator.
    pretrain_updates_per_dispatch: typing.Optional[int] = None
    updates_per_step: int = 1
    # Agent steps per fused update in training: 2 = one update on every other agent step
    # (half the updates per env step, for small compute budgets: preset=cpu).
    update_every: int = 1
    eval_every: int = 10_000  # env steps
    eval_episodes: int = 10  # per policy: stochastic and greedy each
    # Evaluation episodes run this many at a time, each env in a worker process, one batched
    # policy call per step; 1 runs them one after another in this process. None: as many as
    # the CPU cores allow (cores − 2), so 1 on a 2-core machine. Never more than there are
    # episodes: eval_episodes, times `seeds` (all seeds' episodes run side by side).
    eval_envs: typing.Optional[int] = None
    log_every: int = 1_000  # env steps; also the period of the NaN/inf check
    pretrain_log_every: int = 1_000  # latent updates
    checkpoint_every: int = 50_000  # env steps; taken at the next episode boundary
    pretrain_checkpoint_every: int = 10_000  # latent updates
    keep_checkpoints: int = 2
    # Cap on an episode's length in env steps (None: the task's own, 1,000 for DMC).
    episode_env_steps: typing.Optional[int] = None
    action_repeat: typing.Optional[int] = None  # None: the task's
    render_quality: str = "default"
    progress: bool = True

    def __post_init__(self):
        get_task(self.task)
        last = MAX_SEED + 1 - max(self.seeds, 1)  # seed + seeds - 1 is a seed too
        if not 0 <= self.seed <= last:
            raise ValueError(f"seed must be in [0, {last}] (the simulators take seeds below "
                             f"2**32), got {self.seed}")
        positive = ("seeds", "env_steps", "collect_env_steps", "replay_capacity",
                    "updates_per_step", "update_every", "eval_every", "eval_episodes",
                    "log_every", "pretrain_log_every", "checkpoint_every",
                    "pretrain_checkpoint_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.pretrain_updates < 0:
            raise ValueError(f"pretrain_updates must be >= 0, got {self.pretrain_updates}")
        for name in ("episode_env_steps", "action_repeat", "pretrain_updates_per_dispatch",
                     "eval_envs", "collect_agent_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.devices != "all" and not (self.devices.isdigit() and int(self.devices) > 0):
            raise ValueError(f"devices must be 'all' or a positive count, got {self.devices!r}")
        if self.seed_conv not in SEED_CONVS:
            raise ValueError(f"seed_conv must be one of {', '.join(SEED_CONVS)}, got "
                             f"{self.seed_conv!r}")
        if self.seeds > 1 and self.devices != "1":
            raise ValueError("seeds > 1 runs on one device: devices=1 (several seeds on "
                             "several devices are separate runs, e.g. a sweep)")
        if self.render_quality not in ("default", "fast"):
            raise ValueError(f"render_quality must be default or fast, got {self.render_quality!r}")
        if self.collect_steps * self.repeat > self.env_steps:
            raise ValueError(f"random collection ({self.collect_steps} agent steps × action "
                             f"repeat {self.repeat}) exceeds env_steps ({self.env_steps})")
        if self.collect_steps > self.replay_capacity:
            raise ValueError(f"random collection ({self.collect_steps} agent steps) exceeds "
                             f"replay_capacity ({self.replay_capacity})")

    @property
    def repeat(self) -> int:
        """The action repeat in effect."""
        return self.action_repeat or get_task(self.task).action_repeat

    @property
    def collect_steps(self) -> int:
        """Agent steps of random collection: collect_agent_steps, or collect_env_steps at the
        action repeat (rounded up)."""
        return self.collect_agent_steps or -(-self.collect_env_steps // self.repeat)


@dataclasses.dataclass
class ExperimentConfig(TrainConfig):
    """One run, as the command line sees it: protocol keys at the top, `agent.*`, `wandb.*`."""

    agent: AgentOverrides = dataclasses.field(default_factory=AgentOverrides)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)

    def __post_init__(self):
        super().__post_init__()
        agent = self.agent_config()
        if agent.sequence_length >= self.replay_capacity:
            raise ValueError(f"agent.sequence_length ({agent.sequence_length}) must be below "
                             f"replay_capacity ({self.replay_capacity})")
        if self.episode_env_steps is not None:
            episode = -(-self.episode_env_steps // self.repeat)
            if episode < agent.sequence_length:
                raise ValueError(
                    f"episodes of {episode} agent steps (episode_env_steps "
                    f"{self.episode_env_steps} at action repeat {self.repeat}) are shorter than "
                    f"agent.sequence_length ({agent.sequence_length}): no window to train on")

    def agent_config(self) -> AgentConfig:
        """The AgentConfig of this run: the task's defaults with the given overrides."""
        overrides = {name: value for name, value in dataclasses.asdict(self.agent).items()
                     if value is not None}
        return agent_config_for_task(self.task, **overrides)

    def identity(self) -> dict:
        """What a run dir belongs to: a resume must match it (protocol lengths may change)."""
        return dict(task=self.task, seed=self.seed, seeds=self.seeds, action_repeat=self.repeat,
                    replay_capacity=self.replay_capacity,
                    agent=dataclasses.asdict(self.agent_config()))
