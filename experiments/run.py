r"""Train SLAC: `python -m experiments.run task=cheetah_run [key=value ...]`.

    python -m experiments.run task=cheetah_run                  # the full protocol
    python -m experiments.run preset=smoke run_dir=/tmp/smoke   # every phase in minutes
    python -m experiments.run -m task=cheetah_run,walker_walk seed=0,1,2
    python -m experiments.run task=cheetah_run seeds=5          # 5 seeds in one process
    python -m experiments.run sweep=planet6                     # the six PlaNet tasks
    python -m experiments.run cluster=slurm task=cheetah_run,walker_walk seed=0,1,2 \
        hydra.launcher.partition=gpu                            # one SLURM job each

Hydra composes the typed config (slacjax.config.ExperimentConfig) from experiments/conf and
the overrides; `-m` or a `sweep=` preset runs one job per combination, one after another, or
with `cluster=slurm` (experiments/conf/cluster/) submits each to SLURM through submitit.
Before Hydra starts, every job's config is composed and validated here, so a bad override
(unknown key, wrong type, unknown task, a value out of range) is one line on stderr and
nothing runs or is created. A value with non-ASCII characters (a path) is quoted for Hydra,
whose parser takes only ASCII outside quotes. Rerunning a command resumes its run dir from
the latest checkpoint.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys

SETTING_UP = "interrupted while setting up; nothing was trained"


def exit_while_setting_up(signum: int, _frame) -> None:
    """Ctrl-C before the run's own handler (`slacjax.signals`) is in place: one line, now."""
    print(f"error: {SETTING_UP}", file=sys.stderr, flush=True)
    os._exit(128 + signum)


if __name__ == "__main__":  # before the imports below, which take seconds
    signal.signal(signal.SIGINT, exit_while_setting_up)
    if sys.stderr.isatty() and "progress=false" not in sys.argv:
        print("starting: loading JAX and the config", file=sys.stderr, flush=True)

CONF_DIR = pathlib.Path(__file__).resolve().parent / "conf"
REPO_DIR = CONF_DIR.parents[1]
# Before jax is imported: compiled programs survive the process, so reruns start fast.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_DIR / ".jax_cache"))

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.errors import HydraException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from slacjax.config import ExperimentConfig  # noqa: E402

ConfigStore.instance().store(name="experiment_schema", node=ExperimentConfig)

USER_ERRORS = (HydraException, OmegaConfBaseException, ValueError)
MULTIRUN_FLAGS = ("-m", "--multirun")
HELP_FLAGS = ("-h", "--help")


def groups_help() -> str:
    """The config groups (presets, sweeps, clusters) and their choices, from experiments/conf."""
    lines = ["Config groups (group=name):"]
    for group, what in (("preset", "a set of keys"), ("sweep", "one job per combination"),
                        ("cluster", "where jobs run")):
        names = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
        lines.append(f"  {group}={'|'.join(names)}  ({what}; experiments/conf/{group}/)")
    return "\n".join(lines)


def help_text() -> str:
    """`--help`: the command's examples, then every key with its type, default and meaning."""
    from slacjax.config import experiment_help

    examples = __doc__.split("\n\n")[1]
    return "\n\n".join([
        "Train SLAC: python -m experiments.run [key=value ...] [-m]", examples.rstrip(),
        "-m / --multirun: one job per combination of comma-separated values (seed=0,1,2); "
        "Hydra's own flags (--cfg job, --info, …) are listed by --hydra-help.",
        groups_help(), experiment_help()])


QUOTING_HINT = ("Hydra reads only ASCII letters, digits and a few symbols outside quotes: "
                "quote the value, e.g. 'run_dir=\"/data/my runs/é\"'")


def error_line(error: BaseException) -> str:
    """An exception and its cause as one line: the first line of each, plus Hydra's options
    (and how to quote, for a value Hydra's parser could not read)."""
    parts = []
    for part in (error, error.__cause__):
        lines = str(part).strip().splitlines() if part is not None else []
        if lines and lines[0] not in parts:
            parts.append(lines[0])
    options = getattr(error, "options", None)
    if options:
        parts.append(f"(available: {', '.join(options)})")
    if any("LexerNoViableAltException" in part for part in parts):
        parts.append(f"({QUOTING_HINT})")
    return " ".join(parts) or type(error).__name__


def quote_non_ascii(arguments: list[str]) -> list[str]:
    """`key=value` arguments whose value holds non-ASCII characters (a path such as
    /data/é), quoted as Hydra needs them (`key='value'`); values already quoted, holding a
    quote or a backslash, or a sweep's list (a comma) are left as they are."""
    quoted = []
    for argument in arguments:
        key, sign, value = argument.partition("=")
        if (sign and not argument.startswith("-") and not value.isascii()
                and not any(mark in value for mark in "'\"\\,")):
            argument = f"{key}='{value}'"
        quoted.append(argument)
    return quoted


def fail(message: str, status: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    leave(status)


def leave(status: int):
    """sys.exit(status), or, while a background compile still runs (a stopped run abandons
    it: XLA cannot stop one, and exiting would wait for it), os._exit once the output is out;
    everything of the run is closed by then."""
    compile_ahead = sys.modules.get("slacjax.compile_ahead")
    if compile_ahead is not None and compile_ahead.compiling():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def compose(overrides: list[str], with_hydra: bool = False):
    """The config Hydra would give a job with these overrides (not validated)."""
    with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra.compose("config", overrides=overrides, return_hydra_config=with_hydra)


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command will run (one unless multirun)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [override.input_line for override in parsed if not override.is_sweep_override()]
    base = compose(fixed, with_hydra=True)
    multirun = multirun or str(base.hydra.mode) in ("MULTIRUN", "RunMode.MULTIRUN")
    if not multirun:
        return [overrides]
    params = base.hydra.sweeper.get("params") or {}
    from_config = [f"{key}={value}" for key, value in params.items()]
    return BasicSweeper.split_arguments(parser.parse_overrides(from_config + overrides), None)[0]


def experiment_config(overrides: list[str]) -> ExperimentConfig:
    """Composes and validates one job's config (raises one of USER_ERRORS)."""
    return OmegaConf.to_object(compose(overrides))


def validate(overrides: list[str], multirun: bool) -> list[ExperimentConfig]:
    """Every job's config, validated before any job starts."""
    jobs = [experiment_config(job) for job in job_overrides(overrides, multirun)]
    run_dirs = [os.path.abspath(job.run_dir) for job in jobs]
    if len(set(run_dirs)) < len(run_dirs):
        raise ValueError("several jobs of this sweep share a run_dir; leave run_dir at its "
                         "default or put ${task} and ${seed} in it")
    return jobs


class SubmititRequeue:
    """In a submitit job (cluster=slurm or local): the trainer stops at a checkpoint before
    submitit requeues the job.

    Shortly before a job's time limit (or when preempted), submitit gets a signal (USR2) whose
    handler requeues the job and exits on the spot, wherever training is. While installed,
    that signal takes the trainer's SIGTERM path instead (stop at the next step, write a
    checkpoint, return); `requeue_if_asked` then hands it to submitit's handler, which
    requeues the job, and the requeued job resumes from its run dir. Before training starts
    the signal goes straight to submitit. Outside submitit this does nothing.
    """

    def __init__(self):
        self.arrived = None
        self.requeue = None
        if not os.environ.get("SUBMITIT_EXECUTOR"):
            return
        signum = signal.Signals["SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")]
        if callable(signal.getsignal(signum)):
            self.requeue = signal.getsignal(signum)
            self.outside_training = signal.getsignal(signal.SIGTERM)
            signal.signal(signum, self.stop)

    def stop(self, signum, frame) -> None:
        self.arrived = signum
        on_term = signal.getsignal(signal.SIGTERM)
        if on_term is self.outside_training:
            self.requeue(signum, frame)  # nothing to save yet
        elif callable(on_term):
            on_term(signal.SIGTERM, frame)  # the trainer's: stop and checkpoint

    def requeue_if_asked(self) -> None:
        if self.arrived is not None:
            self.requeue(self.arrived, None)  # requeues and exits (or raises: no requeue left)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def train_job(cfg) -> None:
    from slacjax import trainer

    submitit_requeue = SubmititRequeue()
    try:
        status = trainer.run(OmegaConf.to_object(cfg))
    except trainer.LaunchError as error:
        fail(str(error))
    except (trainer.TrainingStopped, trainer.durable.WriteError) as error:
        fail(str(error), status=1)
    except KeyboardInterrupt:  # called in-process, before the run's own handler: nothing to save
        fail(SETTING_UP, status=128 + signal.SIGINT)
    if status:
        submitit_requeue.requeue_if_asked()
        leave(status)


def main() -> None:
    if any(argument in HELP_FLAGS for argument in sys.argv[1:]):
        print(help_text())
        return
    sys.argv[1:] = quote_non_ascii(sys.argv[1:])  # Hydra reads sys.argv again
    arguments = sys.argv[1:]
    flags = [argument for argument in arguments if argument.startswith("-")]
    # Hydra's own commands (--hydra-help, --cfg, --info, …) go to Hydra untouched.
    if all(flag in MULTIRUN_FLAGS for flag in flags):
        overrides = [argument for argument in arguments if not argument.startswith("-")]
        try:
            validate(overrides, multirun=bool(flags))
        except USER_ERRORS as error:
            fail(error_line(error))
    train_job()


if __name__ == "__main__":
    main()
