"""Trains the PyTorch port of SLAC (toshikwa/slac.pytorch 8b9d520) on slacjax's learning protocol.

The port's own `SlacAlgorithm` (its networks, replay buffer, `update_latent`, `update_sac`,
`explore`, `exploit`) learns from slacjax's own pixel env (`slacjax.envs.make`), driven by
slacjax's protocol: random collection, latent-only pretraining, then one `update_latent` +
one `update_sac` every `--update-every` agent steps, evaluations of the stochastic
(`explore`) and greedy (`exploit`) policy. Defaults are `preset=cpu`
(experiments/conf/preset/cpu.yaml). The run dir gets slacjax's `metrics.jsonl` rows and a
`config.yaml` that `python -m experiments.report RUN_DIR` reads.

Set-up, once, from the repository root (docs/development.md, "The PyTorch port side by side";
.peer/ is git-ignored):

    git clone https://github.com/toshikwa/slac.pytorch .peer/slac.pytorch
    git -C .peer/slac.pytorch checkout 8b9d520
    python3 -m venv .peer/venv
    .peer/venv/bin/pip install torch==2.13.0 numpy
    .peer/venv/bin/pip install mujoco==3.17.0 dm_control==1.0.50 gymnasium==1.4.0

(slacjax.envs, .tasks and .reference need only those, numpy and the standard library: no JAX,
no PyYAML, no tqdm in that venv.) Run, from the repository root:

    MUJOCO_GL=egl PYTHONPATH=. .peer/venv/bin/python -m benchmarks.peer_learning \
        --task ball_in_cup_catch --seed 0 --run-dir runs/peer/ball_in_cup_catch/seed0
    .venv/bin/python -m experiments.report runs/peer/ball_in_cup_catch/seed0

MUJOCO_GL must be set before dm_control loads; unset, slacjax's `ensure_gl_backend` picks egl
(else osmesa) before anything imports it.

What is the same as a slacjax run of the same seed: the training episodes' reset seeds, the
collection's random actions and the evaluation episodes' reset seeds (slacjax.seeding's
streams), the phases' lengths and when rows and evaluations fall.
What is the port's: the acting window (the last 8 frames and 7 actions, zero-padded at an
episode's start, as its trainer's `SlacObservation`), the replay (its `ReplayBuffer`: a
time-limit end is stored with done False, as its `algo.step` does), every network, loss and
optimiser, and its random numbers (torch's and NumPy's global generators, seeded by it).

Row metrics come from the port's own `writer.add_scalar` calls, which it makes every 1,000th
latent and SAC update only, so most rows carry none; under slacjax's names: kl, image_nll,
reward_nll, latent_loss (their sum), critic_loss (half the port's, which sums the two critics'
MSEs where slacjax takes 0.5·MSE each), actor_loss, alpha_loss, entropy; any other tag under
its own name with "/" as "_" (stats_alpha). Training rows also carry `alpha`, the port's
temperature at the row (slacjax's rows carry its α too). Evaluation rows also carry
`saturated_stochastic` / `saturated_greedy`: the share of action components at the tanh bound.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

from slacjax.seeding import random_action, stream_seed  # no JAX: the same streams as slacjax

IMPLEMENTATION = "slac.pytorch 8b9d520"
METRICS_FILE = "metrics.jsonl"  # slacjax.logger.METRICS_FILE (that module needs tqdm)
CONFIG_FILE = "config.yaml"

# The port's writer tags -> slacjax's metric names, for the values that mean the same.
TAG_NAMES = {"loss/kld": "kl", "loss/image": "image_nll", "loss/reward": "reward_nll",
             "loss/actor": "actor_loss", "loss/alpha": "alpha_loss",
             "stats/entropy": "entropy"}
LATENT_PARTS = ("kl", "image_nll", "reward_nll")
SATURATED = 0.99  # |action| from which an action component counts as at its bound


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="ball_in_cup_catch", help="a slacjax task name")
    p.add_argument("--seed", type=int, default=0,
                   help="the port's torch/NumPy seed and slacjax's env and action streams")
    p.add_argument("--env-steps", type=int, default=50_000,
                   help="total env steps, random collection included")
    p.add_argument("--collect-env-steps", type=int, default=10_000,
                   help="random uniform actions for ceil(this / action repeat) agent steps")
    p.add_argument("--pretrain-updates", type=int, default=2_000,
                   help="latent-only update_latent calls after collection")
    p.add_argument("--update-every", type=int, default=2,
                   help="in training, one update_latent + one update_sac every this many "
                        "agent steps")
    p.add_argument("--batch-sac", type=int, default=64, help="the port's batch_size_sac")
    p.add_argument("--batch-latent", type=int, default=8, help="the port's batch_size_latent")
    p.add_argument("--lr-latent", type=float, default=1e-4,
                   help="the port's lr_latent (its default and the paper's: 1e-4)")
    p.add_argument("--lr-sac", type=float, default=3e-4,
                   help="the port's lr_sac: its critic's, actor's and temperature's Adam "
                        "(its default and the paper's: 3e-4)")
    p.add_argument("--lr-alpha", type=float, default=None,
                   help="the temperature's Adam lr, when it differs from --lr-sac (slacjax's "
                        "agent.lr_alpha beside agent.lr_critic = agent.lr_actor)")
    p.add_argument("--latent-grad-clip", type=float, default=0.0,
                   help="clip the latent model's gradient to this global norm before its "
                        "Adam step, as slacjax's agent.latent_grad_clip (0: off, the port's)")
    p.add_argument("--init-alpha", type=float, default=0.1,
                   help="the SAC temperature to start from (the port starts at 1)")
    p.add_argument("--replay-capacity", type=int, default=50_000,
                   help="the port's buffer_size: 8-step sequences, about one per agent step")
    p.add_argument("--eval-every", type=int, default=10_000, help="env steps")
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="episodes per evaluation, each of the stochastic and greedy policy")
    p.add_argument("--episode-env-steps", type=int, default=None,
                   help="cap on an episode's env steps (default: the task's own, 1,000 for DMC)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--log-every", type=int, default=1_000,
                   help="env steps between collect/train rows")
    p.add_argument("--pretrain-log-every", type=int, default=500,
                   help="latent updates between pretrain rows (the port's own losses come "
                        "every 1,000th update only)")
    p.add_argument("--render-quality", choices=("default", "fast"), default="default",
                   help="slacjax.envs.make's render_quality (preset=cpu: default)")
    p.add_argument("--run-dir", required=True, type=pathlib.Path,
                   help="where metrics.jsonl and config.yaml go (must hold no metrics.jsonl)")
    p.add_argument("--peer-dir", type=pathlib.Path,
                   default=pathlib.Path(os.environ.get("PEER_DIR", ".peer/slac.pytorch")),
                   help="the port's source tree (default $PEER_DIR or .peer/slac.pytorch)")
    args = p.parse_args(argv)
    positive = ("env_steps", "update_every", "batch_sac", "batch_latent", "replay_capacity",
                "eval_every", "eval_episodes", "threads", "log_every", "pretrain_log_every")
    for name in positive:
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.collect_env_steps <= 0 or args.collect_env_steps > args.env_steps:
        p.error("--collect-env-steps must be in 1..--env-steps (the buffer needs data)")
    if args.pretrain_updates < 0 or args.init_alpha <= 0:
        p.error("--pretrain-updates must be >= 0 and --init-alpha > 0")
    if args.lr_latent <= 0 or args.latent_grad_clip < 0:
        p.error("--lr-latent must be > 0 and --latent-grad-clip >= 0")
    if args.lr_sac <= 0 or (args.lr_alpha is not None and args.lr_alpha <= 0):
        p.error("--lr-sac and --lr-alpha must be > 0")
    if args.episode_env_steps is not None and args.episode_env_steps <= 0:
        p.error("--episode-env-steps must be positive")
    return args


# ------------------------------------------------------------------------------ the port

def import_port(peer_dir: pathlib.Path):
    """The port's SlacAlgorithm class, after the shims it needs here -> (class, shims)."""
    if not (peer_dir / "slac" / "algo.py").exists():
        sys.exit(f"no slac/algo.py under --peer-dir {peer_dir}")
    sys.path.insert(0, str(peer_dir.resolve()))
    import slac.algo
    import slac.buffer
    import slac.network

    check_policy_backward(slac.network.GaussianPolicy)
    return slac.algo.SlacAlgorithm, apply_shims(slac.buffer)


def check_policy_backward(policy_class) -> None:
    """Exits unless the port's policy sample back-propagates on this torch: snapshots before
    its in-place clamp fix fail there (torch >= 1.8); 8b9d520 has the fix, so no shim."""
    import torch

    policy = policy_class((2,), 2, 4, (8,))
    action, log_pi = policy.sample(torch.zeros(3, 2 * 4 + 2))
    try:
        (action.sum() + log_pi.sum()).backward()
    except RuntimeError as error:
        if "inplace" in str(error).replace("-", ""):
            sys.exit("the port's GaussianPolicy.sample modifies a tensor in place under "
                     "autograd: use toshikwa/slac.pytorch 8b9d520")
        raise


def apply_shims(buffer_module) -> list[str]:
    """Patches the port where current NumPy would fail or warn on it; no arithmetic changes.
    -> a line per patch applied (recorded in config.yaml).

    NumPy 2 may pass `copy=` to `__array__`; the port's `LazyFrames.__array__(self, dtype)`
    does not take it. The patch calls the port's own method with the dtype only.
    """
    lazy_frames = buffer_module.LazyFrames
    port_array = lazy_frames.__array__
    if (int(np.__version__.split(".")[0]) < 2
            or "copy" in inspect.signature(port_array).parameters):
        return []

    def frames_array(self, dtype=None, copy=None):
        return port_array(self, dtype)

    lazy_frames.__array__ = frames_array
    return ["LazyFrames.__array__ takes dtype=None, copy=None (NumPy 2 protocol)"]


def set_init_alpha(algo, init_alpha: float, torch) -> None:
    """Starts the port's temperature at `init_alpha`: its log α parameter (held by its
    optimiser, so changed in place) and the α it caches for the losses."""
    with torch.no_grad():
        algo.log_alpha.fill_(math.log(init_alpha))
        algo.alpha = algo.log_alpha.exp()


def clip_latent_gradient(algo, max_norm: float, torch) -> None:
    """Makes the port's latent optimiser clip the model's gradient to `max_norm` (global L2
    norm, as optax.clip_by_global_norm) before each of its Adam steps."""
    adam_step = algo.optim_latent.step
    parameters = list(algo.latent.parameters())

    def clipped_step(*args, **kwargs):
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return adam_step(*args, **kwargs)

    algo.optim_latent.step = clipped_step


class ScalarLog:
    """Stands in for the port's tensorboard writer: keeps the sums of its `add_scalar` calls
    until `take` turns them into slacjax-named means."""

    def __init__(self):
        self.sums = collections.defaultdict(float)
        self.counts = collections.Counter()

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.sums[tag] += float(value)
        self.counts[tag] += 1

    def take(self) -> dict[str, float]:
        """The means since the last `take`, under slacjax's names; then starts over."""
        means = {tag: self.sums[tag] / self.counts[tag] for tag in self.counts}
        self.sums.clear()
        self.counts.clear()
        row = {TAG_NAMES.get(tag, tag.replace("/", "_")): value for tag, value in means.items()
               if tag != "loss/critic"}
        if "loss/critic" in means:
            row["critic_loss"] = 0.5 * means["loss/critic"]  # slacjax: 0.5·MSE per critic
        if all(name in row for name in LATENT_PARTS):
            row["latent_loss"] = sum(row[name] for name in LATENT_PARTS)
        return row


class ActingWindow:
    """What the port's policy acts on, as its trainer's `SlacObservation` gives it: the last
    `length` frames and the `length - 1` actions between them, zero frames and zero actions
    before an episode's first frame. `state` and `action` are the attributes the port's
    `explore` / `exploit` read."""

    def __init__(self, length: int, frame_shape: tuple[int, ...], action_dim: int):
        self.length = length
        self.frame_shape = frame_shape
        self.action_dim = action_dim
        self.frames = collections.deque(maxlen=length)
        self.actions = collections.deque(maxlen=length - 1)

    def reset(self, frame: np.ndarray) -> None:
        """A new episode whose first frame is `frame` [C, H, W] uint8."""
        self.frames.extend(np.zeros(self.frame_shape, np.uint8) for _ in range(self.length))
        self.actions.extend(np.zeros(self.action_dim, np.float32)
                            for _ in range(self.length - 1))
        self.frames.append(frame)

    def push(self, action: np.ndarray, frame: np.ndarray) -> None:
        """`action` [A] was taken and led to `frame` [C, H, W]."""
        self.actions.append(action)
        self.frames.append(frame)

    @property
    def state(self) -> np.ndarray:
        """[1, length, C, H, W] uint8."""
        return np.stack(self.frames)[None]

    @property
    def action(self) -> np.ndarray:
        """[1, (length - 1) * A] float32."""
        return np.concatenate(self.actions).astype(np.float32)[None]


def channels_first(frame: np.ndarray) -> np.ndarray:
    """slacjax's [H, W, 3] frame as the port's [3, H, W] (its dmc2gym layout): a new array,
    since the port's buffer keeps a reference to every frame it is given."""
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


# --------------------------------------------------------------- slacjax's streams and files

def due(now: int, last: int, every: int) -> bool:
    """slacjax.run_state.due: whether a multiple of `every` was crossed since `last`."""
    return now // every > last // every


def json_value(value):
    """JSON has no NaN/inf: slacjax's logger writes them as strings, and so does this."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsFile:
    """`metrics.jsonl`: a row is one `write` of one line, flushed, so no reader sees half."""

    def __init__(self, path: pathlib.Path):
        self.file = path.open("a")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps({key: json_value(value) for key, value in row.items()})
                        + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def yaml_scalar(value) -> str:
    """A YAML scalar or flow list; floats keep a '.' in their mantissa (PyYAML reads 1e-05
    as a string)."""
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return (mantissa if "." in mantissa else mantissa + ".0") + e + exponent
    return json.dumps(value)


def yaml_text(mapping: dict, indent: int = 0) -> str:
    """A nested dict of scalars and lists as block YAML (the port's venv has no PyYAML)."""
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            lines.append(f"{' ' * indent}{key}:\n{yaml_text(value, indent + 2)}")
        else:
            lines.append(f"{' ' * indent}{key}: {yaml_scalar(value)}")
    return "\n".join(lines)


def hms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------------- the run

class PeerRun:
    """One run: slacjax's envs, the port's algorithm, the counters and the run dir's files."""

    def __init__(self, args: argparse.Namespace, algo_class, torch, shims: list[str]):
        from slacjax import envs, tasks

        self.args = args
        self.repeat = tasks.get_task(args.task).action_repeat
        self.collect_steps = -(-args.collect_env_steps // self.repeat)
        cap = (None if args.episode_env_steps is None
               else -(-args.episode_env_steps // self.repeat))  # slacjax's rounding
        settings = dict(action_repeat=self.repeat, render_quality=args.render_quality,
                        max_episode_steps=cap)  # slacjax.evaluation.env_settings
        self.env = envs.make(args.task, seed=args.seed, **settings)
        self.eval_env = envs.make(args.task, seed=args.seed, **settings)
        self.action_dim = int(self.env.action_space.shape[0])
        size = self.env.observation_space.shape[0]
        self.frame_shape = (3, size, size)
        np.random.seed(args.seed)  # the port's constructor seeds both again, as its train.py
        torch.manual_seed(args.seed)
        self.algo = algo_class(
            state_shape=self.frame_shape, action_shape=(self.action_dim,),
            action_repeat=self.repeat, device=torch.device("cpu"), seed=args.seed,
            batch_size_sac=args.batch_sac, batch_size_latent=args.batch_latent,
            buffer_size=args.replay_capacity, lr_latent=args.lr_latent, lr_sac=args.lr_sac)
        if args.lr_alpha is not None:
            for group in self.algo.optim_alpha.param_groups:
                group["lr"] = args.lr_alpha
        set_init_alpha(self.algo, args.init_alpha, torch)
        if args.latent_grad_clip > 0:
            clip_latent_gradient(self.algo, args.latent_grad_clip, torch)
        self.window = ActingWindow(self.algo.num_sequences, self.frame_shape, self.action_dim)
        self.writer = ScalarLog()
        write_config(args, self.repeat, self.algo, shims)
        self.metrics = MetricsFile(args.run_dir / METRICS_FILE)

        self.phase = "collect"
        self.env_steps = self.agent_steps = self.pretrain_updates = 0
        self.episodes, self.evals, self.physics_errors = 0, 0, 0
        self.episode_return, self.last_episode_return = 0.0, None
        self.needs_reset = True
        self.last_log = self.last_eval = 0
        self.started = time.monotonic()
        self.rate_mark = (self.started, 0)
        self.phase_mark = (self.started, 0, 0.0)  # (when, position, eval seconds then)
        self.seconds = collections.Counter()  # per phase; evaluations apart
        self.updates, self.update_seconds = 0, 0.0

    def wall(self) -> float:
        return time.monotonic() - self.started

    # ---------------------------------------------------------------------------- phases

    def run(self) -> None:
        for name, phase in (("collect", self.collect), ("pretrain", self.pretrain),
                            ("train", self.train)):
            self.start_phase(name)
            evals_before, started = self.seconds["eval"], time.monotonic()
            phase()
            self.seconds[name] = time.monotonic() - started - (self.seconds["eval"]
                                                               - evals_before)
        self.env.close()
        self.eval_env.close()
        self.metrics.close()
        self.print_summary()

    def start_phase(self, name: str) -> None:
        """As slacjax's trainer: rows and evaluations count from the phase's start."""
        self.phase = name
        self.last_log = 0 if name == "pretrain" else self.env_steps
        self.last_eval = self.env_steps
        now = time.monotonic()
        self.rate_mark = (now, self.position())
        self.phase_mark = (now, self.position(), self.seconds["eval"])

    def collect(self) -> None:
        """Uniform random actions for `collect_steps` agent steps, into the port's buffer."""
        while self.agent_steps < self.collect_steps:
            self.begin_episode()
            self.step_env(random_action(self.args.seed, self.agent_steps, self.action_dim),
                          training=False)
        self.flush_row()

    def pretrain(self) -> None:
        """The port's latent-model update alone, `pretrain_updates` times."""
        for _ in range(self.args.pretrain_updates):
            self.algo.update_latent(self.writer)
            self.pretrain_updates += 1
            if due(self.pretrain_updates, self.last_log, self.args.pretrain_log_every):
                self.flush_row()
        self.flush_row()

    def train(self) -> None:
        """Per agent step, in slacjax's order: act on the window, update when due, step."""
        while self.env_steps < self.args.env_steps:
            self.begin_episode()
            action = self.policy_action(self.window, greedy=False)
            if (self.agent_steps - self.collect_steps) % self.args.update_every == 0:
                self.update()
            self.step_env(action, training=True)
        self.flush_row()
        if self.last_eval != self.env_steps:
            self.evaluate()

    # ------------------------------------------------------------------------- env steps

    def begin_episode(self) -> None:
        """Resets the env after an episode ended (or before the first): the window and the
        port's buffer start from its first frame, as the port's `algo.step` starts them."""
        if not self.needs_reset:
            return
        obs, _ = self.env.reset(seed=stream_seed(self.args.seed, 0, self.episodes))
        self.episodes += 1
        frame = channels_first(obs)
        self.window.reset(frame)
        self.algo.buffer.reset_episode(frame)
        self.episode_return, self.needs_reset = 0.0, False

    def step_env(self, action: np.ndarray, training: bool) -> None:
        """One agent step: the port's buffer and window, the counters, then what is due."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        frame = channels_first(obs)
        ended = terminated or truncated
        # The port stores done False at a time limit (its `mask`): only a termination is.
        self.algo.buffer.append(action, float(reward), bool(terminated), frame, ended)
        self.window.push(action, frame)
        self.episode_return += float(reward)
        self.env_steps += int(info["env_steps"])
        self.agent_steps += 1
        if "physics_error" in info:
            self.physics_errors += 1
            print(f"the simulator failed at env step {self.env_steps} "
                  f"({info['physics_error']}); its episode ends there", flush=True)
        if ended:
            self.last_episode_return, self.needs_reset = self.episode_return, True
        if due(self.env_steps, self.last_log, self.args.log_every):
            self.flush_row()
        if training and due(self.env_steps, self.last_eval, self.args.eval_every):
            self.evaluate()

    def policy_action(self, window: ActingWindow, greedy: bool) -> np.ndarray:
        """The port's greedy (`exploit`) or sampled (`explore`) action [A] for `window`."""
        action = (self.algo.exploit if greedy else self.algo.explore)(window)
        if not np.isfinite(action).all():
            raise RuntimeError(f"non-finite action {action} from the port's policy in the "
                               f"{self.phase} phase at env step {self.env_steps}")
        return action

    def update(self) -> None:
        started = time.perf_counter()
        self.algo.update_latent(self.writer)
        self.algo.update_sac(self.writer)
        self.update_seconds += time.perf_counter() - started
        self.updates += 1

    # ------------------------------------------------------------------- rows and output

    def position(self) -> int:
        """Where the phase is: latent updates in pretraining, else env steps."""
        return self.pretrain_updates if self.phase == "pretrain" else self.env_steps

    def flush_row(self) -> None:
        """A row of slacjax's phase rows (see slacjax.metrics.phase_row) and its line;
        nothing if nothing happened since the last one."""
        position = self.position()
        if position == self.last_log:
            return
        now = time.monotonic()
        rate = (position - self.rate_mark[1]) / max(now - self.rate_mark[0], 1e-9)
        row = dict(phase=self.phase, env_step=self.env_steps, agent_step=self.agent_steps,
                   wall_time=round(self.wall(), 3), **self.writer.take())
        if self.phase == "pretrain":
            row["pretrain_update"] = self.pretrain_updates
        else:
            row.update(env_steps_per_s=round(rate, 3), episode_return=self.last_episode_return,
                       physics_errors=self.physics_errors)
        if self.phase == "train":
            row["alpha"] = float(self.algo.alpha.item())
        self.metrics.write(row)
        self.rate_mark, self.last_log = (now, position), position
        unit = "updates" if self.phase == "pretrain" else "env steps"
        print(f"{self.phase:>8} env step {self.env_steps:>7} agent step {self.agent_steps:>6}"
              + (f" update {self.pretrain_updates}" if self.phase == "pretrain" else "")
              + f"  {rate:7.2f} {unit}/s  phase ETA {hms(self.phase_eta(now))}"
              + f"  wall {hms(self.wall())}", flush=True)

    def phase_eta(self, now: float) -> float | None:
        """Seconds left in the phase at its mean rate so far, evaluations left out."""
        started, start, evals_then = self.phase_mark
        done = self.position() - start
        if done <= 0:
            return None
        left = {"collect": (self.collect_steps - self.agent_steps) * self.repeat,
                "pretrain": self.args.pretrain_updates - self.pretrain_updates,
                "train": self.args.env_steps - self.env_steps}[self.phase]
        busy = now - started - (self.seconds["eval"] - evals_then)
        return max(left, 0) * busy / done

    def evaluate(self) -> None:
        """`eval_episodes` of the port's stochastic and greedy policy: slacjax's eval row."""
        from slacjax import reference

        started = time.monotonic()
        row = dict(phase="eval", env_step=self.env_steps, agent_step=self.agent_steps)
        for mode, greedy in (("stochastic", False), ("greedy", True)):
            episodes = [self.eval_episode(greedy, stream_seed(self.args.seed, 2, self.evals,
                                                              int(greedy), episode))
                        for episode in range(self.args.eval_episodes)]
            returns = [total for total, _ in episodes]
            row[f"return_{mode}"] = float(np.mean(returns))
            row[f"saturated_{mode}"] = float(np.mean([share for _, share in episodes]))
            row[f"return_{mode}_std"] = float(np.std(returns))
            row[f"returns_{mode}"] = returns
        eval_seconds = time.monotonic() - started
        paper = reference.mean_at(self.args.task, self.env_steps)
        row.update(eval_seconds=round(eval_seconds, 3), wall_time=round(self.wall(), 3),
                   paper_return=paper)
        self.metrics.write(row)
        self.seconds["eval"] += eval_seconds
        self.evals, self.last_eval = self.evals + 1, self.env_steps
        beside = "" if paper is None else f"; SLAC paper {paper:.0f}"
        print(f"eval at env step {self.env_steps}: return {row['return_stochastic']:.1f} "
              f"stochastic, {row['return_greedy']:.1f} greedy{beside} "
              f"({eval_seconds:.0f} s)", flush=True)

    def eval_episode(self, greedy: bool, reset_seed: int) -> tuple[float, float]:
        """One evaluation episode with a window of its own -> (its return, the share of its
        action components at the tanh bound, |a| ≥ SATURATED: a policy mean far outside
        the bound makes the greedy policy a constant push)."""
        window = ActingWindow(self.algo.num_sequences, self.frame_shape, self.action_dim)
        obs, _ = self.eval_env.reset(seed=reset_seed)
        window.reset(channels_first(obs))
        total, done, saturated = 0.0, False, []
        while not done:
            action = self.policy_action(window, greedy)
            saturated.append(np.abs(action) >= SATURATED)
            obs, reward, terminated, truncated, _ = self.eval_env.step(action)
            window.push(action, channels_first(obs))
            total += float(reward)
            done = terminated or truncated
        return total, float(np.mean(saturated))

    def print_summary(self) -> None:
        total = sum(self.seconds.values())
        print("wall-clock seconds: " + ", ".join(
            f"{name} {self.seconds[name]:.1f}" for name in ("collect", "pretrain", "train",
                                                            "eval"))
              + f"; total {total:.1f} ({hms(total)})", flush=True)
        if self.pretrain_updates:
            print(f"pretrain: {self.seconds['pretrain'] / self.pretrain_updates:.3f} s per "
                  "update_latent", flush=True)
        if self.updates:
            print(f"train: {self.updates} updates, {self.update_seconds / self.updates:.3f} s "
                  "per update_latent + update_sac", flush=True)


def write_config(args: argparse.Namespace, repeat: int, algo, shims: list[str]) -> None:
    """`config.yaml`: the protocol under slacjax's key names (task, seed and action_repeat
    are what experiments.report reads) and what the port runs with."""
    config = dict(
        implementation=IMPLEMENTATION, peer_dir=str(args.peer_dir), compat_shims=shims,
        task=args.task, seed=args.seed, seeds=1, action_repeat=repeat,
        run_dir=str(args.run_dir), env_steps=args.env_steps,
        collect_env_steps=args.collect_env_steps, replay_capacity=args.replay_capacity,
        pretrain_updates=args.pretrain_updates, updates_per_step=1,
        update_every=args.update_every, eval_every=args.eval_every,
        eval_episodes=args.eval_episodes, episode_env_steps=args.episode_env_steps,
        log_every=args.log_every, pretrain_log_every=args.pretrain_log_every,
        render_quality=args.render_quality, threads=args.threads,
        agent=dict(
            batch_sac=algo.batch_size_sac, batch_latent=algo.batch_size_latent,
            init_alpha=args.init_alpha, learn_alpha=True, separate_latent_batch=True,
            sequence_length=algo.num_sequences, gamma=algo.gamma, tau=algo.tau,
            lr_latent=algo.optim_latent.param_groups[0]["lr"],
            lr_critic=algo.optim_critic.param_groups[0]["lr"],
            lr_actor=algo.optim_actor.param_groups[0]["lr"],
            lr_alpha=algo.optim_alpha.param_groups[0]["lr"],
            latent_grad_clip=args.latent_grad_clip,
            decoder_var=float(algo.latent.decoder.std) ** 2),
    )
    header = ("# benchmarks/peer_learning.py: the PyTorch port on slacjax's protocol.\n"
              "# replay_capacity counts the port's 8-step sequences (one per agent step after\n"
              "# an episode's 8th); decoder_var is the port's own, whatever the task.\n")
    path = args.run_dir / CONFIG_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(header + yaml_text(config) + "\n")
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.run_dir / METRICS_FILE).exists():
        sys.exit(f"{args.run_dir / METRICS_FILE} exists: choose another --run-dir")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    from slacjax.envs import ensure_gl_backend

    ensure_gl_backend()  # MUJOCO_GL (egl, else osmesa) before anything loads dm_control
    import torch

    torch.set_num_threads(args.threads)
    algo_class, shims = import_port(args.peer_dir)
    run = PeerRun(args, algo_class, torch, shims)
    print(f"{IMPLEMENTATION} on {args.task} seed {args.seed}: {args.env_steps} env steps "
          f"(action repeat {run.repeat}, {run.collect_steps} random agent steps, "
          f"{args.pretrain_updates} pretraining updates), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, MUJOCO_GL={os.environ['MUJOCO_GL']}; "
          f"run dir {args.run_dir}", flush=True)
    run.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
