"""Benchmark of the fused SLAC update step at full size on random data held on the device.

    python -m experiments.bench [--batch-sac 256] [--batch-latent 32] [--tiny] [--iters 50]
                                [--warmup 3] [--scan K] [--dtype float32|bfloat16]
                                [--seeds N [--seed-conv grouped|loop|patches] | --devices N|all]
                                [--formulation phases|phase_grads|gemm]

Each timed call is one jitted, state-donating dispatch of K updates (`--scan K`) that samples
its own batches from a device replay, exactly as training does; times are per update: the
median of calls that each wait for their result (latency), and the mean of calls dispatched
back to back (pipelined, as the training loop runs them). Next to the times, the size of
each program: its operations as lowered (StableHLO) and as compiled (the optimised HLO's
instructions, and the kernels it launches per call). Prints a table, then one JSON object as
the last line.

`--tiny` (SAC 8, latent 2 sequences) is the overhead regime: so little arithmetic per
operation that the time is mostly the operations' count, as on a GPU.

`--seeds N` times N independent agents (each with its own replay) vmapped into one program: an
update is then one step of all N, and `seeds_cost_ratio` compares it with one agent's update.
`--seed-conv` picks how the N seeds' convolutions are computed (`steps.make_steps`).
`--devices N` splits each sampled batch over N local devices (state and replay replicated).
`--formulation` computes the convolutions another way than the backend's default
(`slacjax.convolutions.FORMULATIONS`), to compare them on one machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from slacjax import convolutions, networks, parallel
from slacjax import replay as replay_lib
from slacjax import steps as steps_lib
from slacjax.config import DEFAULT_SEED_CONV, SEED_CONVS, AgentConfig

EPISODE_FRAMES = 251  # a DMC episode at action repeat 4: 250 agent steps + the reset frame
FULL_BATCHES = (256, 32)  # (SAC, latent) sequences: the paper's
TINY_BATCHES = (8, 2)
# Random frames are drawn for this many slots and repeated over the ring: a random draw of a
# full-size ring would need many times its memory on the way.
BLOCK_FRAMES = 1024


def random_replay(key: jax.Array, capacity: int, action_dim: int) -> replay_lib.Replay:
    """A full replay of random frames laid out as back-to-back episodes (unjitted)."""
    k_frames, k_actions, k_rewards = jax.random.split(key, 3)
    slots = jnp.arange(capacity, dtype=jnp.int32)
    block = jax.random.bits(k_frames, (min(BLOCK_FRAMES, capacity), 64, 64, 3), jnp.uint8)
    return replay_lib.Replay(
        frames=block[slots % block.shape[0]],
        actions=jax.random.uniform(k_actions, (capacity, action_dim), minval=-1, maxval=1),
        rewards=jax.random.uniform(k_rewards, (capacity,)),
        terminals=jnp.zeros((capacity,)),
        episode=slots // EPISODE_FRAMES,
        episode_step=slots % EPISODE_FRAMES,
        cursor=jnp.zeros((), jnp.int32),
        size=jnp.asarray(capacity, jnp.int32),
        next_episode=jnp.asarray(capacity // EPISODE_FRAMES + 1, jnp.int32),
    )


def random_replays(keys: jax.Array, capacity: int, action_dim: int, mesh=None):
    """One random replay per key [N, 2], stacked [N, ...], written in place on the device (and
    replicated over `mesh` if given)."""
    placed = {} if mesh is None else {"out_shardings": parallel.replicated(mesh)}
    build = jax.jit(jax.vmap(random_replay, in_axes=(0, None, None)), static_argnums=(1, 2),
                    **placed)
    return build(keys, capacity, action_dim)


def time_calls(step, state, iters: int, warmup: int):
    """Runs `step` warmup + iters times -> (state, first-call s, per-call seconds of the timed).

    Each timed call waits for its result: latency, one dispatch included.
    """
    start = time.perf_counter()
    state, metrics = step(state)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        state, metrics = step(state)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        state, metrics = step(state)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return state, first, np.asarray(times), metrics


def time_pipelined(step, state, iters: int):
    """Seconds per call of `iters` calls dispatched back to back, as the training loop does
    (the host queues the next call while the device runs this one) -> (state, seconds)."""
    start = time.perf_counter()
    for _ in range(iters):
        state, metrics = step(state)
    jax.block_until_ready((state, metrics))
    return state, (time.perf_counter() - start) / iters


def compiled_programs(*steps) -> tuple[int, ...] | None:
    """How many executables each step's jitted function holds; None where jax does not say."""
    try:
        return tuple(step.func._cache_size() for step in steps)
    except AttributeError:
        return None


def programs_for(args, cfg: AgentConfig, num_seeds: int):
    """-> (the mesh or None, `steps.make_steps`' programs) of the chosen layout."""
    mesh = parallel.make_mesh(args.devices) if args.devices > 1 else None
    seed_conv = args.seed_conv or DEFAULT_SEED_CONV
    return mesh, steps_lib.make_steps(cfg, args.action_dim, num_seeds, mesh, seed_conv,
                                      args.formulation)


def setup(args, cfg: AgentConfig, key: jax.Array, num_seeds: int | None = None):
    """The stacked state and the two jitted steps of the chosen layout -> (state, fused,
    latent_only), for `num_seeds` agents (default `--seeds`).

    Each step maps a state to (state, metrics) with K = `--scan` updates per call; `fused` and
    `latent_only` are partials of `steps.make_steps`' jitted functions (`.func`), so
    recompilations can be counted.
    """
    num_seeds = args.seeds if num_seeds is None else num_seeds
    mesh, programs = programs_for(args, cfg, num_seeds)
    keys = jax.random.split(key, num_seeds)
    replay = random_replays(keys, args.capacity, args.action_dim, mesh)
    state = programs.init_state(keys)
    fused = functools.partial(programs.train, replay=replay, num_steps=args.scan)
    latent_only = functools.partial(programs.pretrain, replay=replay, num_steps=args.scan)
    return state, fused, latent_only


def one_seed_call_s(args, cfg: AgentConfig, key: jax.Array) -> float:
    """Median seconds of one agent's fused call: the baseline `--seeds N` is measured against
    (its own compile, on a replay like one seed's)."""
    state, fused, _ = setup(args, cfg, key, num_seeds=1)
    _, _, times, _ = time_calls(fused, state, args.iters, args.warmup)
    return float(np.median(times))


# StableHLO and CHLO operations as printed in a lowered module, one per line (attributes such as
# `#stablehlo.conv<...>` and types such as `!stablehlo.token` are not at a line's start).
_LOWERED_OP = re.compile(r'^\s*(?:%[^=]*=\s*)?"?(?:stablehlo|chlo)\.\w+', re.M)
_HLO_COMPUTATION = re.compile(r"^(ENTRY )?%(\S+) .*\{$")
_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%\S+ = .*?\b([a-z][a-z0-9-]*)\(")
_CALLED = re.compile(r"\b(?:body|condition|to_apply|true_computation|false_computation)=%([\w.-]+)"
                     r"|branch_computations=\{([^}]*)\}")
# Instructions that launch nothing: arguments, literals, tuples and free reinterpretations.
_FREE = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}


def lowered_ops(text: str) -> int:
    """StableHLO (and CHLO) operations in a lowered module's text (`Lowered.as_text()`)."""
    return len(_LOWERED_OP.findall(text))


def hlo_computations(text: str) -> tuple[dict[str, list[str]], str]:
    """An optimised HLO module's text -> ({computation: instruction lines}, entry's name)."""
    computations, entry, current = {}, None, None
    for line in text.splitlines():
        header = _HLO_COMPUTATION.match(line)
        if header:
            current = computations.setdefault(header[2], [])
            entry = header[2] if header[1] else entry
        elif line.startswith("}"):
            current = None
        elif current is not None and _HLO_INSTRUCTION.match(line):
            current.append(line)
    return computations, entry


def compiled_size(text: str) -> tuple[int, int]:
    """An optimised HLO module's text -> (its instructions, the kernels it launches).

    Kernels: the instructions of the entry computation and of the loop bodies, conditions,
    calls and branches it runs (each once, however often it runs), except those that launch
    nothing (`_FREE`); a fusion is one kernel, its fused instructions are not counted.
    """
    computations, entry = hlo_computations(text)
    kernels, seen, pending = 0, set(), [entry]
    while pending:
        name = pending.pop()
        if name in seen or name not in computations:
            continue
        seen.add(name)
        for line in computations[name]:
            if _HLO_INSTRUCTION.match(line)[1] not in _FREE:
                kernels += 1
            for single, several in _CALLED.findall(line):
                pending.extend([single] if single else
                               [part.strip().lstrip("%") for part in several.split(",")])
    return sum(map(len, computations.values())), kernels


def program_size(step, state) -> dict[str, int]:
    """The jitted program behind `step` (a partial of a `steps.make_steps` function) for
    `state` -> lowered_ops, compiled_ops, kernels. Its executable is already compiled: the
    compile below is a cache hit."""
    lowered = step.func.lower(state, **step.keywords)
    compiled_ops, kernels = compiled_size(lowered.compile().as_text())
    return {"lowered_ops": lowered_ops(lowered.as_text()), "compiled_ops": compiled_ops,
            "kernels": kernels}


def peak_host_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_memory_mb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sac", type=int, default=None,
                        help=f"SAC batch (sequences; default {FULL_BATCHES[0]})")
    parser.add_argument("--batch-latent", type=int, default=None,
                        help=f"latent batch (sequences; default {FULL_BATCHES[1]})")
    parser.add_argument("--tiny", action="store_true",
                        help=f"SAC {TINY_BATCHES[0]}, latent {TINY_BATCHES[1]} sequences: the "
                             "per-operation overhead regime")
    parser.add_argument("--iters", type=int, default=50, help="timed calls")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls, compile included")
    parser.add_argument("--scan", type=int, default=1, metavar="K", help="updates per dispatch")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype of the convolutions")
    parser.add_argument("--action-dim", type=int, default=6, help="6 = cheetah_run")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay slots")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1,
                        help="independent agents vmapped in one program")
    parser.add_argument("--seed-conv", choices=SEED_CONVS, default=None,
                        help="with --seeds N > 1: how the seeds' convolutions are computed "
                             f"(default {DEFAULT_SEED_CONV})")
    parser.add_argument("--devices", default="1", metavar="N|all",
                        help="local devices each sampled batch is split over")
    parser.add_argument("--formulation", choices=tuple(convolutions.FORMULATIONS), default=None,
                        help="convolution formulation for every program (default: the "
                             "backend's, named in the output's conv_formulation)")
    args = parser.parse_args(argv)
    if args.tiny and (args.batch_sac, args.batch_latent) != (None, None):
        parser.error("--tiny sets the batches: give it or --batch-sac / --batch-latent")
    defaults = TINY_BATCHES if args.tiny else FULL_BATCHES
    if args.batch_sac is None:
        args.batch_sac = defaults[0]
    if args.batch_latent is None:
        args.batch_latent = defaults[1]
    for name in ("batch_sac", "batch_latent", "iters", "warmup", "scan", "action_dim", "seeds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.capacity < 2 * EPISODE_FRAMES:
        parser.error(f"--capacity must be at least {2 * EPISODE_FRAMES}")
    args.devices = parse_devices(parser, args.devices)
    if args.seeds > 1 and args.devices > 1:
        parser.error("--seeds and --devices are benchmarked one at a time")
    if args.seed_conv is not None and args.seeds == 1:
        parser.error("--seed-conv needs --seeds N > 1")
    if args.seeds > 1 and args.seed_conv is None:
        args.seed_conv = DEFAULT_SEED_CONV
    if args.formulation is not None and args.seeds > 1 and args.seed_conv != networks.PLAIN_CONV:
        parser.error(f"--formulation applies to one agent or to --seed-conv {networks.PLAIN_CONV}")
    for size, what in ((args.batch_sac, "--batch-sac"), (args.batch_latent, "--batch-latent")):
        if size % args.devices:
            parser.error(f"{what} {size} does not split over {args.devices} devices")
    return args


def parse_devices(parser: argparse.ArgumentParser, value: str) -> int:
    """--devices: "all" or a count of local devices -> that count."""
    available = len(jax.local_devices())
    count = available if value == "all" else int(value) if value.isdigit() else 0
    if not 1 <= count <= available:
        parser.error(f"--devices must be 'all' or 1..{available}, got {value!r}")
    return count


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = AgentConfig(batch_sac=args.batch_sac, batch_latent=args.batch_latent, dtype=args.dtype)
    key = jax.random.PRNGKey(args.seed)
    state, fused, latent_only = setup(args, cfg, key)
    k = args.scan

    state, fused_first, fused_times, metrics = time_calls(fused, state, args.iters, args.warmup)
    warm = compiled_programs(fused, latent_only)
    state, fused_pipelined_s = time_pipelined(fused, state, args.iters)
    state, latent_first, latent_times, _ = time_calls(latent_only, state, args.iters, args.warmup)
    state, latent_pipelined_s = time_pipelined(latent_only, state, args.iters)
    warm_latent = compiled_programs(fused, latent_only)
    # A second round of fused calls after the latent warm-up: any recompilation shows here.
    state, _, _, metrics = time_calls(fused, state, 2, 0)
    after = compiled_programs(fused, latent_only)
    recompiles = (None if after is None
                  else after[0] - warm[0] + after[1] - warm_latent[1])
    sizes = {"update": program_size(fused, state),
             "latent_update": program_size(latent_only, state)}
    del state, fused, latent_only  # their memory is the baseline's to use
    # N seeds against 1: the same timed call for one plain agent (1 seed is its own baseline).
    one_seed_s = (one_seed_call_s(args, cfg, key) if args.seeds > 1
                  else float(np.median(fused_times)))

    per_update_ms = fused_times * 1e3 / k
    latent_ms = latent_times * 1e3 / k
    device = jax.devices()[0]
    result = {
        "device": f"{device.platform}:{device.device_kind}",
        "jax": jax.__version__,
        "dtype": args.dtype,
        "batch_sac": args.batch_sac,
        "batch_latent": args.batch_latent,
        "scan": k,
        "iters": args.iters,
        "update_ms_median": round(float(np.median(per_update_ms)), 3),
        "update_ms_p90": round(float(np.percentile(per_update_ms, 90)), 3),
        "updates_per_s": round(1e3 / float(np.median(per_update_ms)), 2),
        "latent_update_ms_median": round(float(np.median(latent_ms)), 3),
        "latent_updates_per_s": round(1e3 / float(np.median(latent_ms)), 2),
        "update_ms_pipelined": round(fused_pipelined_s * 1e3 / k, 3),
        "latent_update_ms_pipelined": round(latent_pipelined_s * 1e3 / k, 3),
        "compile_s": round(fused_first - float(np.median(fused_times)), 2),
        "latent_compile_s": round(latent_first - float(np.median(latent_times)), 2),
        "peak_device_mem_mb": peak_memory_mb(),
        "peak_host_rss_mb": peak_host_rss_mb(),
        "recompiles_after_warmup": recompiles,
        "finite_losses": bool(np.all([np.isfinite(v).all() for v in metrics.values()])),
        "seeds": args.seeds,
        "seed_conv": args.seed_conv,
        "conv_formulation": programs_for(args, cfg, args.seeds)[1].conv_formulation(k),
        "devices": args.devices,
        "seeds_cost_ratio": round(float(np.median(fused_times)) / one_seed_s, 3),
        **{f"{program}_{measure}": value for program, size in sizes.items()
           for measure, value in size.items()},
    }
    rows = [
        ("device", result["device"]), ("jax", result["jax"]), ("dtype", args.dtype),
        ("batch (SAC / latent)", f"{args.batch_sac} / {args.batch_latent}"),
        ("updates per dispatch", k),
        ("seeds / devices", f"{args.seeds} / {args.devices}"),
        ("seed convolutions", args.seed_conv),
        ("convolution formulation", result["conv_formulation"]),
        ("fused update ms (median / p90)",
         f"{result['update_ms_median']:.2f} / {result['update_ms_p90']:.2f}"),
        ("fused updates/s", result["updates_per_s"]),
        ("latent update ms (median)", f"{result['latent_update_ms_median']:.2f}"),
        ("pipelined ms (fused / latent)",
         f"{result['update_ms_pipelined']:.2f} / {result['latent_update_ms_pipelined']:.2f}"),
        ("compile s (fused / latent)", f"{result['compile_s']} / {result['latent_compile_s']}"),
        *((f"{measure.replace('_', ' ')} (fused / latent)",
           f"{sizes['update'][measure]} / {sizes['latent_update'][measure]}")
          for measure in sizes["update"]),
        ("peak device memory MB", result["peak_device_mem_mb"]),
        ("peak host memory MB", result["peak_host_rss_mb"]),
        ("recompiles after warm-up", result["recompiles_after_warmup"]),
        ("N seeds / 1 seed call time", result["seeds_cost_ratio"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
