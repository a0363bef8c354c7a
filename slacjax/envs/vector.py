"""Several `make` envs stepping in parallel worker processes."""

from __future__ import annotations

import functools
import signal
from multiprocessing import resource_tracker

from slacjax import tasks
from slacjax.envs.factory import check_overrides, make
from slacjax.envs.gl import ensure_gl_backend


def make_in_worker(task: str, seed: int, max_episode_steps: int | None, **overrides):
    """`make`, run by a worker process, which first stops reacting to SIGINT: Ctrl-C (or
    `timeout --signal=INT`) reaches the whole process group, and the parent, which saves a
    checkpoint on SIGINT, still needs its workers to close them in order."""
    import multiprocessing
    import signal

    if multiprocessing.parent_process() is not None:  # not when the parent reads the spaces
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return make(task, seed, max_episode_steps, **overrides)


def make_vector(task: str, num_envs: int, seed: int = 0, max_episode_steps: int | None = None,
                **overrides):
    """A `gymnasium.vector.AsyncVectorEnv` of `num_envs` copies of `make(task, seed + i, ...)`.

    Workers start with "spawn", never "fork": a forked child would inherit this process's
    JAX threads and GL contexts, neither of which survives a fork. Each worker imports
    slacjax through the pickled `functools.partial(make_in_worker, ...)` (spawn passes
    `sys.path`) and inherits `MUJOCO_GL`. Observations are batched (num_envs, S, S, 3) uint8.
    Gymnasium's default autoreset applies: the step after an episode ends resets that env and
    returns its first frame with reward 0 and both flags False.
    Note: AsyncVectorEnv builds one env in this process to read the spaces; it never renders,
    so no GL context is made here.
    """
    import gymnasium

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    tasks.get_task(task)  # an unknown task fails here, not inside a worker
    check_overrides(overrides)
    ensure_gl_backend()  # before the workers start, so they inherit MUJOCO_GL
    env_fns = [
        functools.partial(make_in_worker, task, seed + index, max_episode_steps, **overrides)
        for index in range(num_envs)
    ]
    # The workers start with SIGINT blocked (spawn's fork and exec keep the mask) until
    # make_in_worker ignores it: a Ctrl-C while they import would print their tracebacks.
    # multiprocessing's resource tracker unblocks SIGINT when it starts: it starts first.
    resource_tracker.ensure_running()
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return gymnasium.vector.AsyncVectorEnv(env_fns, context="spawn")
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
