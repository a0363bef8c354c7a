"""Where the time of an update goes: a `jax.profiler` trace of pipelined updates, summarised.

    python -m benchmarks.profile_update [--what latent|fused] [--steps 20] [--scan K]
                                        [--dtype float32|bfloat16] [--call jit|compiled]
                                        [--formulation NAME] [--top 25] [--trace-dir D]

Runs the same jitted, state-donating steps as `experiments.bench` (random frames in a full
device replay), compiles and warms them up, then traces `--steps` calls dispatched back to
back. From the device's kernel timeline it prints, per update: the wall time, the summed
kernel time (busy), the number of kernels, the largest gaps, and the top HLO ops by time
grouped into convolutions / matrix products / copies / other kernels; then one JSON line.
Kernel launches that the host cannot issue as fast as the device runs them show as
busy << wall. On a CPU the kernels are XLA:CPU's thunks, timed on the host threads that run
them (several at a time: busy can exceed wall, and idle is not the device's).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import shutil
import tempfile
import time

import jax

from experiments import bench
from slacjax import convolutions
from slacjax.config import AgentConfig


def kernel_events(xplane_path: str) -> list[tuple[str, int, int]]:
    """(hlo op or kernel name, start ns, duration ns) of every kernel on the device streams;
    with no device timeline (a CPU), of every XLA:CPU thunk on the host threads that run
    them."""
    from jax.profiler import ProfileData

    device, host = [], []
    for plane in ProfileData.from_file(xplane_path).planes:
        on_device = plane.name.startswith("/device:")
        if not on_device and plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if on_device and line.name.startswith("Stream"):
                for event in line.events:
                    stats = dict(event.stats)
                    device.append((str(stats.get("hlo_op", event.name)), int(event.start_ns),
                                   int(event.duration_ns)))
            elif not on_device and line.name.startswith("tf_XLA"):
                host.extend((event.name, int(event.start_ns), int(event.duration_ns))
                            for event in line.events
                            if not event.name.startswith(("ThunkExecutor", "end:")))
    return device or host


def category(name: str) -> str:
    lowered = name.lower()
    if "conv" in lowered or "cudnn" in lowered:
        return "convolution"
    if any(word in lowered for word in ("gemm", "dot", "matmul", "cublas")):
        return "matrix product"
    if "copy" in lowered or "transpose" in lowered:
        return "copy"
    return "other"


def summarise(events, updates: int, top: int) -> dict:
    """Per-update totals, by category and by op, and the idle gaps between kernels."""
    if not events:
        return {}
    events = sorted(events, key=lambda event: event[1])
    busy = sum(duration for _, _, duration in events)
    span = events[-1][1] + events[-1][2] - events[0][1]
    gaps = [later[1] - (earlier[1] + earlier[2]) for earlier, later in zip(events, events[1:])]
    by_op = collections.Counter()
    counts = collections.Counter()
    by_category = collections.Counter()
    for name, _, duration in events:
        by_op[name] += duration
        counts[name] += 1
        by_category[category(name)] += duration
    per_update_ms = 1e-6 / updates
    return {
        "kernels_per_update": round(len(events) / updates, 1),
        "kernel_busy_ms_per_update": round(busy * per_update_ms, 4),
        "device_span_ms_per_update": round(span * per_update_ms, 4),
        "idle_ms_per_update": round(sum(gap for gap in gaps if gap > 0) * per_update_ms, 4),
        "by_category_ms_per_update": {name: round(total * per_update_ms, 4)
                                      for name, total in by_category.most_common()},
        "top_ops": [{"op": name, "ms_per_update": round(total * per_update_ms, 4),
                     "calls_per_update": round(counts[name] / updates, 2)}
                    for name, total in by_op.most_common(top)],
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=("latent", "fused"), default="latent",
                        help="latent-only update (pretraining) or the fused update")
    parser.add_argument("--steps", type=int, default=20, help="traced calls")
    parser.add_argument("--scan", type=int, default=1, metavar="K", help="updates per call")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch-sac", type=int, default=256)
    parser.add_argument("--batch-latent", type=int, default=32)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--action-dim", type=int, default=6)
    parser.add_argument("--call", choices=("jit", "compiled"), default="jit",
                        help="call the jitted function (C++ dispatch) or its ahead-of-time "
                             "`Compiled` executable (dispatch through Python)")
    parser.add_argument("--formulation", choices=tuple(convolutions.FORMULATIONS), default=None,
                        help="convolution formulation (default: the backend's, as in "
                             "experiments.bench)")
    parser.add_argument("--top", type=int, default=25, help="ops listed")
    parser.add_argument("--trace-dir", default=None,
                        help="keep the raw trace (.xplane.pb, for TensorBoard/XProf) here")
    args = parser.parse_args(argv)
    for name in ("steps", "scan", "batch_sac", "batch_latent", "action_dim", "top"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.capacity < 2 * bench.EPISODE_FRAMES:
        parser.error(f"--capacity must be at least {2 * bench.EPISODE_FRAMES}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = AgentConfig(batch_sac=args.batch_sac, batch_latent=args.batch_latent, dtype=args.dtype)
    setup_args = argparse.Namespace(scan=args.scan, seeds=1, devices=1, seed_conv=None,
                                    capacity=args.capacity, action_dim=args.action_dim,
                                    formulation=args.formulation)
    state, fused, latent_only = bench.setup(setup_args, cfg, jax.random.PRNGKey(0))
    step = latent_only if args.what == "latent" else fused
    if args.call == "compiled":
        compiled = step.func.lower(state, **step.keywords).compile()
        replay = step.keywords["replay"]

        def step(state):
            return compiled(state, replay=replay)
    for _ in range(3):  # compile and warm up
        state, metrics = step(state)
    jax.block_until_ready((state, metrics))

    trace_dir = pathlib.Path(tempfile.mkdtemp(prefix="slacjax-trace-"))
    with jax.profiler.trace(str(trace_dir)):
        started = time.perf_counter()
        state, wall_s = bench.time_pipelined(step, state, args.steps)
        traced_s = time.perf_counter() - started
    updates = args.steps * args.scan
    xplanes = sorted(glob.glob(str(trace_dir / "**" / "*.xplane.pb"), recursive=True))
    summary = summarise(kernel_events(xplanes[-1]), updates, args.top) if xplanes else {}
    if args.trace_dir and xplanes:
        pathlib.Path(args.trace_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(xplanes[-1], pathlib.Path(args.trace_dir) / f"{args.what}.xplane.pb")
    shutil.rmtree(trace_dir, ignore_errors=True)

    device = jax.devices()[0]
    result = {"device": f"{device.platform}:{device.device_kind}", "jax": jax.__version__,
              "what": args.what, "call": args.call, "dtype": args.dtype, "scan": args.scan,
              "updates": updates, "wall_ms_per_update": round(wall_s * 1e3 / args.scan, 4),
              "traced_s": round(traced_s, 3), **summary}
    print(f"{args.what} update, {args.dtype}, {args.scan} per call, {updates} updates traced on "
          f"{result['device']}: {result['wall_ms_per_update']:.3f} ms per update (wall)")
    if summary:
        print(f"kernels per update {summary['kernels_per_update']}, busy "
              f"{summary['kernel_busy_ms_per_update']:.3f} ms, idle between kernels "
              f"{summary['idle_ms_per_update']:.3f} ms")
        for name, ms in summary["by_category_ms_per_update"].items():
            print(f"  {name:<16} {ms:8.3f} ms")
        print(f"  {'op':<60} {'ms/update':>10} {'calls':>6}")
        for row in summary["top_ops"]:
            print(f"  {row['op'][:60]:<60} {row['ms_per_update']:10.4f} "
                  f"{row['calls_per_update']:6.1f}")
    else:
        print("no kernel timeline in the trace: wall time only")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
