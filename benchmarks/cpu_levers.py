"""SLAC's convolutions, each formulation of `slacjax.convolutions` timed layer by layer.

    python -m benchmarks.cpu_levers decoder [--frames 288] [--iters 5]
    python -m benchmarks.cpu_levers encoder [--frames 288] [--forward-only]
    python -m benchmarks.cpu_levers autoencoder [--conv NAME] [--decoder NAME]
    python -m benchmarks.cpu_levers hlo [--conv NAME] [--decoder NAME] [--frames 8]

`decoder` / `encoder`: forward + backward (input and kernel gradients) of every strided layer,
median wall and process-CPU ms of `--iters` calls after one compiling call. `autoencoder`: the
gradient of encoder -> decoder, its time and gradient norms (compare them under XLA_FLAGS).
`hlo`: where XLA:CPU runs each convolution of that gradient, once as one step and once inside
a 2-step `lax.scan`: a YNNPACK fusion, its convolution thunk (Eigen) or the naive loop emitter.
Prints one JSON object per line. XLA_FLAGS from the environment apply.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from slacjax import convolutions as convs

# (Cin, Cout, kernel, stride, padding, input size): SLAC's encoder and decoder layers.
ENCODER = [(3, 32, 5, 2, 2, 64), (32, 64, 3, 2, 1, 32), (64, 128, 3, 2, 1, 16),
           (128, 256, 3, 2, 1, 8), (256, 256, 4, 1, 0, 4)]
DECODER = [(256, 128, 3, 2, 1, 4), (128, 64, 3, 2, 1, 8), (64, 32, 3, 2, 1, 16),
           (32, 3, 5, 2, 2, 32)]
CONVS = {"lax": convs.conv_lax, "gemm": convs.conv_as_gemm, "canonical": convs.conv_canonical,
         "gemm_grads": convs.conv_gemm_grads, "phase_grads": convs.conv_phase_grads}
TRANSPOSES = {**convs.TRANSPOSE_FORMULATIONS,
              "phases+gemm_grads": functools.partial(convs.conv_transpose_phases,
                                                     conv=convs.conv_gemm_grads)}


def median_ms(fun, args, iters: int) -> tuple[float, float, float]:
    """-> (first call s, median wall ms, median process CPU ms of `iters` further calls).

    CPU time says how much work a call did when other jobs share the cores (wall time then
    includes their share)."""
    start = time.perf_counter()
    jax.block_until_ready(fun(*args))
    first = time.perf_counter() - start
    wall, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fun(*args))
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return first, float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3


def forward_backward(layer):
    """layer(x, kernel) -> jitted (x, kernel, cotangent) -> (input grad, kernel grad)."""
    def step(x, kernel, cotangent):
        _, vjp = jax.vjp(layer, x, kernel)
        return vjp(cotangent)
    return jax.jit(step)


def layer_inputs(frames: int, c_in: int, c_out: int, k: int, size: int, out_size: int):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    return (jax.random.normal(kx, (frames, size, size, c_in)),
            jax.random.normal(kk, (k, k, c_in, c_out)) * 0.05,
            jax.random.normal(kg, (frames, out_size, out_size, c_out)))


def bench_decoder(args) -> None:
    for name, fun in TRANSPOSES.items():
        if args.only and name not in args.only:
            continue
        total = total_cpu = 0.0
        for c_in, c_out, k, stride, pad, size in DECODER:
            x, kernel, cotangent = layer_inputs(args.frames, c_in, c_out, k, size, size * stride)
            step = forward_backward(lambda a, b, fun=fun, s=stride, p=pad: fun(a, b, s, p))
            first, ms, cpu_ms = median_ms(step, (x, kernel, cotangent), args.iters)
            total, total_cpu = total + ms, total_cpu + cpu_ms
            print(json.dumps({"lever": "decoder", "formulation": name, "frames": args.frames,
                              "layer": f"{c_in}->{c_out} k{k} {size}->{size * stride}",
                              "fwd_bwd_ms": round(ms, 1), "cpu_ms": round(cpu_ms, 1),
                              "compile_s": round(first, 2)}), flush=True)
        print(json.dumps({"lever": "decoder", "formulation": name, "frames": args.frames,
                          "layer": "all strided", "fwd_bwd_ms": round(total, 1),
                          "cpu_ms": round(total_cpu, 1)}), flush=True)


def bench_encoder(args) -> None:
    for name, fun in CONVS.items():
        if args.only and name not in args.only:
            continue
        total = total_cpu = 0.0
        for c_in, c_out, k, stride, pad, size in ENCODER:
            out_size = (size + 2 * pad - k) // stride + 1
            x, kernel, cotangent = layer_inputs(args.frames, c_in, c_out, k, size, out_size)
            def layer(a, b, fun=fun, s=stride, p=pad):
                return fun(a, b, (s, s), ((p, p), (p, p)))

            if args.forward_only:
                first, ms, cpu_ms = median_ms(jax.jit(layer), (x, kernel), args.iters)
            else:
                first, ms, cpu_ms = median_ms(forward_backward(layer), (x, kernel, cotangent),
                                              args.iters)
            total, total_cpu = total + ms, total_cpu + cpu_ms
            print(json.dumps({"lever": "encoder", "formulation": name, "frames": args.frames,
                              "layer": f"{c_in}->{c_out} k{k} s{stride} {size}->{out_size}",
                              "pass": "fwd" if args.forward_only else "fwd_bwd",
                              "ms": round(ms, 1), "cpu_ms": round(cpu_ms, 1),
                              "compile_s": round(first, 2)}), flush=True)
        print(json.dumps({"lever": "encoder", "formulation": name, "frames": args.frames,
                          "layer": "all", "pass": "fwd" if args.forward_only else "fwd_bwd",
                          "ms": round(total, 1), "cpu_ms": round(total_cpu, 1)}), flush=True)


def classify_convolutions(hlo: str) -> list[dict]:
    """Each convolution of an optimised HLO module -> where XLA:CPU runs it.

    "ynn": inside a YNNPACK fusion; "library": a plain convolution in NHWC/HWIO -> NHWC form
    (XLA:CPU's convolution thunk, Eigen); "loop emitter": any other (naive loops).
    """
    ynn_bodies = set(re.findall(r"kind=kCustom, calls=(%[\w.\-]+)[^\n]*__ynn_fusion", hlo))
    rows, computation = [], None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?(%[\w.\-]+) ", line)
        if header and line.rstrip().endswith("{"):
            computation = header.group(1)
        if " convolution(" not in line:
            continue
        labels = re.search(r"dim_labels=([\w>-]+)", line).group(1)
        window = re.search(r"window=\{([^}]*)\}", line).group(1)
        shape = re.search(r"= (\w+\[[\d,]*\])", line).group(1)
        where = ("ynn" if computation in ynn_bodies
                 else "library" if labels == "b01f_01io->b01f" else "loop emitter")
        rows.append({"shape": shape, "window": window, "dim_labels": labels, "runs_as": where})
    return rows


def autoencoder_loss(args):
    """Encoder -> decoder reconstruction loss of `--frames` random frames -> (loss, params).

    SLAC's strided layers with `--conv` convolutions and `--decoder` transposed convolutions;
    the encoder's 1×1 output is broadcast to 4×4 in place of the decoder's first layer.
    """
    key = jax.random.PRNGKey(0)
    keys = jax.random.split(key, len(ENCODER) + len(DECODER))
    params = ([jax.random.normal(k, (ks, ks, ci, co)) * (2.0 / (ks * ks * ci)) ** 0.5
               for k, (ci, co, ks, *_) in zip(keys, ENCODER)],
              [jax.random.normal(k, (ks, ks, ci, co)) * (2.0 / (ks * ks * ci)) ** 0.5
               for k, (ci, co, ks, *_) in zip(keys[len(ENCODER):], DECODER)])
    frames = jax.random.uniform(key, (args.frames, 64, 64, 3))
    transpose, conv = TRANSPOSES[args.decoder], CONVS[args.conv]

    def loss(params):
        x = frames
        for kernel, (*_, s, p, _) in zip(params[0], ENCODER):
            x = jax.nn.leaky_relu(conv(x, kernel, (s, s), ((p, p), (p, p))), 0.2)
        x = jnp.broadcast_to(x, (x.shape[0], 4, 4, x.shape[-1]))
        for kernel, (*_, s, p, _) in zip(params[1], DECODER):
            x = jax.nn.leaky_relu(transpose(x, kernel, s, p), 0.2)
        return jnp.mean((x - frames) ** 2)

    return loss, params


def bench_autoencoder(args) -> None:
    """Time of the autoencoder's gradient, and its gradient norms (to compare under flags)."""
    loss, params = autoencoder_loss(args)
    grad = jax.jit(jax.value_and_grad(loss))
    first, ms, cpu_ms = median_ms(grad, (params,), args.iters)
    value, grads = grad(params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    print(json.dumps({"lever": "autoencoder", "conv": args.conv, "decoder": args.decoder,
                      "frames": args.frames, "grad_ms": round(ms, 1), "cpu_ms": round(cpu_ms, 1),
                      "compile_s": round(first, 2), "loss": float(value),
                      "grad_norms": [round(n, 6) for n in norms]}), flush=True)


def bench_hlo(args) -> None:
    """Where each convolution of the autoencoder's gradient runs, once and in a 2-step scan."""
    loss, params = autoencoder_loss(args)

    def scanned(params):
        return jax.lax.scan(lambda p, _: (p, jax.grad(loss)(p)), params, None, length=2)[1]

    for name, fun in (("one step", jax.grad(loss)), ("scan of 2", scanned)):
        hlo = jax.jit(fun).lower(params).compile().as_text()
        rows = classify_convolutions(hlo)
        counts = {kind: sum(r["runs_as"] == kind for r in rows)
                  for kind in ("ynn", "library", "loop emitter")}
        print(json.dumps({"lever": "hlo", "program": name, "conv": args.conv,
                          "decoder": args.decoder, "counts": counts}), flush=True)
        for row in rows:
            print(json.dumps({"lever": "hlo", "program": name, **row}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("decoder", "encoder", "autoencoder", "hlo"))
    parser.add_argument("--frames", type=int, default=288, help="images per batch (32×9)")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per layer")
    parser.add_argument("--forward-only", action="store_true", help="encoder: no gradients")
    parser.add_argument("--only", nargs="*", default=None, help="formulations to time")
    parser.add_argument("--conv", choices=tuple(CONVS), default="lax",
                        help="autoencoder / hlo: the encoder's convolutions")
    parser.add_argument("--decoder", choices=tuple(TRANSPOSES),
                        default="phases",
                        help="autoencoder / hlo: the decoder's transposed convolutions")
    args = parser.parse_args(argv)
    if args.frames <= 0 or args.iters <= 0:
        parser.error("--frames and --iters must be positive")
    {"decoder": bench_decoder, "encoder": bench_encoder, "autoencoder": bench_autoencoder,
     "hlo": bench_hlo}[args.what](args)


if __name__ == "__main__":
    main()
