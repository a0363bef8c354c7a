"""Environment throughput: agent steps per second with uniformly random actions.

    python -m experiments.bench_env task=cheetah_run steps=1000 render_quality=fast num_envs=1

Keys (key=value): task, steps (agent steps per env), render_quality, num_envs, action_repeat
(task default), image_size, seed. Prints a table, then one JSON line (the last line).
With num_envs > 1 the rate is that of `make_vector` (all envs together). `render_ms` is
always timed on one env in this process; `physics_step_ms` is derived from one env's
agent step: (step time - render time) / action_repeat, so it includes per-step Python
overhead and resets (cheetah settles its pose with 200 physics steps at each reset).
"""

from __future__ import annotations

import json
import sys
import time

from slacjax import envs, tasks

DEFAULTS = dict(
    task="cheetah_run", steps=1000, render_quality="fast", num_envs=1, action_repeat=None,
    image_size=64, seed=0,
)


def parse_args(argv: list[str]) -> dict:
    """key=value arguments over DEFAULTS; raises ValueError with a one-line reason."""
    config = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise ValueError(f"unknown argument {arg!r}; use key=value, keys: {list(DEFAULTS)}")
        if key in ("task", "render_quality"):
            config[key] = value
        elif value.lstrip("-").isdigit():
            config[key] = int(value)
        else:
            raise ValueError(f"{key} must be an integer, got {value!r}")
    if config["action_repeat"] is None:
        config["action_repeat"] = tasks.get_task(config["task"]).action_repeat
    return config


def time_single_env(config: dict) -> dict:
    """Seconds per agent step (resets included) and per render, on one env.

    Each step is followed by one extra, separately timed render of the same state, so both
    timings see the same scenes and the same CPU load.
    """
    env = envs.make(
        config["task"], seed=config["seed"], action_repeat=config["action_repeat"],
        image_size=config["image_size"], render_quality=config["render_quality"],
    )
    env.reset()  # builds the GL context outside the timing
    step_s = render_s = 0.0
    for _ in range(config["steps"]):
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        middle = time.perf_counter()
        env.render()
        step_s += middle - start
        render_s += time.perf_counter() - middle
    env.close()
    return dict(step_s=step_s / config["steps"], render_s=render_s / config["steps"])


def time_vector_env(config: dict) -> float:
    """Seconds per vector step (num_envs agent steps); autoreset happens inside."""
    vector = envs.make_vector(
        config["task"], config["num_envs"], seed=config["seed"],
        action_repeat=config["action_repeat"], image_size=config["image_size"],
        render_quality=config["render_quality"],
    )
    vector.reset()
    vector.step(vector.action_space.sample())  # the first step also waits for slow workers
    start = time.perf_counter()
    for _ in range(config["steps"]):
        vector.step(vector.action_space.sample())
    step_s = (time.perf_counter() - start) / config["steps"]
    vector.close()
    return step_s


def benchmark(config: dict) -> dict:
    backend = envs.ensure_gl_backend()
    single = time_single_env(config)
    num_envs = config["num_envs"]
    # The single env runs first and alone, then the vector env alone: no CPU sharing.
    step_s = single["step_s"] if num_envs == 1 else time_vector_env(config) / num_envs
    agent_steps_per_s = 1.0 / step_s
    return dict(
        task=config["task"], backend=backend, render_quality=config["render_quality"],
        action_repeat=config["action_repeat"], image_size=config["image_size"],
        num_envs=num_envs, agent_steps=config["steps"] * num_envs,
        agent_steps_per_s=round(agent_steps_per_s, 1),
        env_steps_per_s=round(agent_steps_per_s * config["action_repeat"], 1),
        render_ms=round(single["render_s"] * 1e3, 3),
        physics_step_ms=round(
            max(single["step_s"] - single["render_s"], 0.0) / config["action_repeat"] * 1e3, 4
        ),
    )


def format_table(result: dict) -> str:
    rows = [
        ("task", result["task"]), ("backend", result["backend"]),
        ("render quality", result["render_quality"]), ("num envs", result["num_envs"]),
        ("action repeat", result["action_repeat"]),
        ("agent steps/s", f"{result['agent_steps_per_s']:.1f}"),
        ("env steps/s", f"{result['env_steps_per_s']:.1f}"),
        ("ms per render (1 env)", f"{result['render_ms']:.3f}"),
        ("ms per physics step (1 env, derived)", f"{result['physics_step_ms']:.4f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str]) -> int:
    try:
        config = parse_args(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = benchmark(config)
    print(format_table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
