"""Typed configuration: the agent (model, losses, optimisers) and the training protocol.

Defaults are the paper's (docs/algorithm.md §2–§5). Per-task values (action repeat, decoder
variance) come from the one task table, `slacjax.tasks`. `AgentConfig` is hashable so that
jitted functions take it as a static argument: changing it recompiles, changing data never
does.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing

from omegaconf import MISSING, OmegaConf

from slacjax.tasks import get_task

MAX_SEED = 2**32 - 1  # the simulators' seeds are below 2**32; seed + seeds - 1 must be too

# How a multi-seed program computes convolutions whose weights differ per seed (the strategies
# of `slacjax.networks`: the same function, different speed; BENCHMARKS.md compares them).
SEED_CONVS = ("grouped", "loop", "patches")
DEFAULT_SEED_CONV = "loop"


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything the jitted model and update step depend on (docs/algorithm.md §2–§5)."""

    image_size: int = 64  # frame side in pixels (the conv encoder/decoder need 64)
    feature_dim: int = 256  # size of the encoder's feature of one frame
    z1_dim: int = 32  # size of the latent z1
    z2_dim: int = 256  # size of the latent z2
    hidden_dim: int = 256  # width of the MLPs (priors, posteriors, reward, actor, critics)
    # Variance of the decoder's Gaussian over pixels; the task's (0.1 for cheetah_run, 0.4
    # for walker_walk, …) unless set.
    decoder_var: float = 0.1
    # Transitions per sampled sequence (sequence_length + 1 frames); the policy sees the last
    # sequence_length frames and the sequence_length - 1 actions between them. At least 2.
    sequence_length: int = 8
    batch_sac: int = 256  # sequences per SAC update
    batch_latent: int = 32  # sequences per latent-model update
    # docs/algorithm.md §5: the latent batch is the first `batch_latent` of the SAC batch (the
    # authors' choice);
    # True samples a separate latent batch (the PyTorch port's choice).
    separate_latent_batch: bool = False
    gamma: float = 0.99  # discount, in (0, 1)
    tau: float = 0.005  # target networks' Polyak step, in (0, 1]
    lr_latent: float = 1e-4  # Adam learning rate of the latent model
    lr_critic: float = 3e-4  # Adam learning rate of the twin critics
    lr_actor: float = 3e-4  # Adam learning rate of the actor
    lr_alpha: float = 3e-4  # Adam learning rate of log α (the temperature)
    # Global-norm clip of the latent model's gradient before Adam; 0 = none (the paper's).
    # At lr_latent 1e-3 one burst of unseen states (a first caught episode) can blow the
    # model up; clipping bounds what such a burst does to Adam's moments.
    latent_grad_clip: float = 0.0
    # Learned temperature by default (log α starts at log(init_alpha)); False keeps α = init_alpha.
    learn_alpha: bool = True
    init_alpha: float = 1.0  # the temperature α at the start
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

    enabled: bool = True  # log to wandb as well as to metrics.jsonl
    mode: str = "offline"  # offline (sync later with `wandb sync`), online or disabled
    project: str = "slacjax"  # the wandb project
    entity: typing.Optional[str] = None  # the wandb entity (user or team); None: the default
    # The wandb group; None: none for one seed, the run dir's name for several.
    group: typing.Optional[str] = None
    # No banner, sync hints or run summary from wandb itself (the run's own output says where
    # its files are).
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

    # The task: a DeepMind Control Suite task (cheetah_run, walker_walk, cartpole_swingup,
    # ball_in_cup_catch, finger_spin, reacher_easy, …) or a Gymnasium MuJoCo one.
    task: str = "cheetah_run"
    # The run's seed (>= 0): env resets, random actions, evaluations and network init.
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
    # Where the run's files go (by default ending in seed0, or seeds0-4 for seed=0 seeds=5);
    # rerunning the same command resumes from it.
    run_dir: str = "runs/${task}/${seed_dir:${seed},${seeds}}"
    overwrite: bool = False  # true: clear run_dir (saying what it deletes) and start over
    env_steps: int = 1_000_000  # env steps in all, random collection included
    # Random collection: 10,000 env steps (10,000 / action repeat agent steps), as the SLAC
    # paper's curves show; collect_agent_steps, when set, counts agent steps instead (the
    # released code's and the PyTorch port's 10,000 agent steps).
    collect_env_steps: int = 10_000
    collect_agent_steps: typing.Optional[int] = None  # see collect_env_steps; None: unset
    replay_capacity: int = 100_000  # transitions the replay holds (per seed)
    pretrain_updates: int = 100_000  # latent-model updates after random collection
    # Latent updates per jitted call; None: 1 on a CPU (XLA:CPU runs convolutions inside a
    # loop ~10x slower), 100 on an accelerator.
    pretrain_updates_per_dispatch: typing.Optional[int] = None
    updates_per_step: int = 1  # fused updates per update step in training
    # Agent steps per fused update in training: 2 = one update on every other agent step
    # (half the updates per env step, for small compute budgets: preset=cpu).
    update_every: int = 1
    eval_every: int = 10_000  # evaluate every this many env steps
    eval_episodes: int = 10  # episodes per evaluation, of each policy (stochastic, greedy)
    # Evaluation episodes run this many at a time, each env in a worker process, one batched
    # policy call per step; 1 runs them one after another in this process. None: as many as
    # the CPU cores allow (cores − 2), so 1 on a 2-core machine. Never more than there are
    # episodes: eval_episodes, times `seeds` (all seeds' episodes run side by side).
    eval_envs: typing.Optional[int] = None
    log_every: int = 1_000  # a row every this many env steps; also the NaN/inf check's period
    pretrain_log_every: int = 1_000  # a pretraining row every this many latent updates
    # A checkpoint every this many env steps, taken at the next episode boundary.
    checkpoint_every: int = 50_000
    pretrain_checkpoint_every: int = 10_000  # a checkpoint every this many latent updates
    keep_checkpoints: int = 2  # the newest checkpoints kept (older ones are deleted)
    # Cap on an episode's length in env steps (None: the task's own, 1,000 for DMC).
    episode_env_steps: typing.Optional[int] = None
    action_repeat: typing.Optional[int] = None  # env steps per agent step; None: the task's
    # Rendering: "default" (the suite's look) or "fast" (no multisampling, shadows or
    # reflections: ~15x cheaper per frame on a CPU).
    render_quality: str = "default"
    progress: bool = True  # the progress bar (rate, ETA, the run's ETA) on stderr

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


# ------------------------------------------------------------------------------------ --help

def field_docs(cls) -> dict[str, str]:
    """{field: its description} of a dataclass whose fields are described by comments in its
    source: the comment lines right above a field and the comment after it on its line (the
    one description there is, for the code and for --help alike)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {token.start[0] - 1: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    names = {field.name for field in dataclasses.fields(cls)}
    docs, above = {}, []
    for index, line in enumerate(source.splitlines()):
        field = re.match(r" {4}(\w+)\s*:", line)
        if line.strip().startswith("#"):
            above.append(comments[index])
        elif field and field[1] in names:
            docs[field[1]] = " ".join(above + ([comments[index]] if index in comments else []))
            above = []
        else:
            above = []
    return docs


def _type_name(kind) -> str:
    """int, str, …; 'int or null' for an Optional."""
    arguments = [argument for argument in typing.get_args(kind) if argument is not type(None)]
    if typing.get_origin(kind) is typing.Union and len(arguments) == 1:
        return f"{_type_name(arguments[0])} or null"
    if typing.get_origin(kind) in (list, typing.List):
        return f"list of {_type_name(arguments[0])}"
    return getattr(kind, "__name__", str(kind))


def _default_text(value) -> str:
    if value is MISSING:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def keys_help(cls, prefix: str = "", defaults: dict | None = None, width: int = 100) -> str:
    """Every field of dataclass `cls` as `prefix` + name, its type and default (`defaults`
    overriding the class's), and its description wrapped to `width` columns."""
    docs, kinds = field_docs(cls), typing.get_type_hints(cls)
    blocks = []
    for field in dataclasses.fields(cls):
        default = (defaults or {}).get(field.name, field.default)
        if default is dataclasses.MISSING:
            default = field.default_factory()
        head = (f"  {prefix}{field.name} ({_type_name(kinds[field.name])}, default "
                f"{_default_text(default)})")
        text = docs.get(field.name) or ""
        text = text[:1].upper() + text[1:]
        body = textwrap.fill(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        blocks.append(head + ("\n" + body if text else ""))
    return "\n".join(blocks)


def experiment_help(task: str = "cheetah_run") -> str:
    """The keys of `experiments.run`: the protocol's, agent.* (defaults as for `task`: the
    decoder variance is the task's) and wandb.*."""
    agent_defaults = dataclasses.asdict(agent_config_for_task(task))
    return "\n\n".join([
        "The run (key=value):", keys_help(TrainConfig),
        f"The agent (agent.key=value; defaults for task={task}):",
        keys_help(AgentConfig, "agent.", agent_defaults),
        "Weights & Biases (wandb.key=value):", keys_help(WandbConfig, "wandb.")])
