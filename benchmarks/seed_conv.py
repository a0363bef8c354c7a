"""Microbenchmark of the seed-convolution strategies (`config.SEED_CONVS`) against one seed.

    python -m benchmarks.seed_conv [--parts encoder,decoder,update] [--seeds 2,5]
                                   [--strategies grouped,loop,patches] [--batch 18]
                                   [--iters 10]

Parts: "encoder" / "decoder" time `vmap(value_and_grad(loss))` of that module over N stacked
parameter sets and inputs (`--batch` images or latents per seed; 18 = 2 sequences × 9 frames);
"update" times the N-seed `train` of `steps.make_steps` (SAC batch `--batch-sac`, latent batch
`--batch-latent`). Each is compared with one seed's plain program: the encoder / decoder without
vmap, or the 1-seed `train`. All programs of a part are compiled first, then timed in
round-robin rounds (one call each per round, each call waited for), so a machine whose load
drifts skews them alike; the median call is reported. Prints rows as they finish, then one
JSON object per row.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import random_replays
from slacjax import networks
from slacjax.config import SEED_CONVS, AgentConfig
from slacjax.steps import make_steps


def module_programs(part: str, seed_counts, strategies, batch: int) -> dict:
    """{(strategy, N): call()} for the encoder or the decoder; ("one seed", 1) runs no vmap."""
    cfg = AgentConfig()

    def module(strategy):
        return getattr(networks.build(cfg, 1, strategy), part)

    def inputs_for(key):
        if part == "encoder":
            return jax.random.uniform(key, (batch, 64, 64, 3))
        return jax.random.normal(key, (batch, cfg.z_dim))

    def grad(strategy):
        def loss(params, inputs):
            return jnp.mean(jnp.square(module(strategy).apply(params, inputs)))
        return jax.value_and_grad(loss)

    def seeds_program(strategy):
        return jax.jit(jax.vmap(grad(strategy)))

    one_inputs = inputs_for(jax.random.PRNGKey(1))
    one_params = module(networks.PLAIN_CONV).init(jax.random.PRNGKey(0), one_inputs)
    one = jax.jit(grad(networks.PLAIN_CONV))
    programs = {("one seed", 1): lambda: one(one_params, one_inputs)}
    for n in seed_counts:
        keys = jax.random.split(jax.random.PRNGKey(n), n)
        inputs = jax.vmap(inputs_for)(keys)
        params = jax.vmap(module(networks.PLAIN_CONV).init)(keys, inputs)
        for strategy in strategies:
            fn = seeds_program(strategy)
            programs[strategy, n] = lambda fn=fn, params=params, inputs=inputs: fn(params, inputs)
    return programs


def update_programs(seed_counts, strategies, cfg: AgentConfig, action_dim: int = 3,
                    capacity: int = 600) -> dict:
    """{(strategy, N): call()} of the fused update; each call threads its own donated state."""
    key = jax.random.PRNGKey(0)

    def threaded(step, state):
        holder = [state]

        def call():
            holder[0], metrics = step(holder[0])
            return metrics
        return call

    one = make_steps(cfg, action_dim)
    keys = key[None]
    replay = random_replays(keys, capacity, action_dim)
    programs = {("one seed", 1): threaded(lambda s: one.train(s, replay, 1),
                                          one.init_state(keys))}
    for n in seed_counts:
        keys = jax.random.split(key, n)
        replays = random_replays(keys, capacity, action_dim)
        for strategy in strategies:
            seeds = make_steps(cfg, action_dim, n, seed_conv=strategy)
            programs[strategy, n] = threaded(
                lambda s, seeds=seeds, replays=replays: seeds.train(s, replays, 1),
                seeds.init_state(keys))
    return programs


def time_round_robin(programs: dict, iters: int) -> dict:
    """Compiles every program, then `iters` rounds of one waited-for call each -> median s."""
    for call in programs.values():
        jax.block_until_ready(call())
        jax.block_until_ready(call())  # a donated state's second layout, if any
    times = {name: [] for name in programs}
    for _ in range(iters):
        for name, call in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="encoder,decoder,update")
    parser.add_argument("--seeds", default="2,5", help="comma-separated N")
    parser.add_argument("--strategies", default=",".join(SEED_CONVS))
    parser.add_argument("--batch", type=int, default=18, help="encoder / decoder: per seed")
    parser.add_argument("--batch-sac", type=int, default=4, help="update: SAC batch")
    parser.add_argument("--batch-latent", type=int, default=2, help="update: latent batch")
    parser.add_argument("--iters", type=int, default=10, help="timed rounds")
    args = parser.parse_args(argv)
    seed_counts = [int(n) for n in args.seeds.split(",")]
    strategies = args.strategies.split(",")
    device = jax.devices()[0]
    rows = []
    for part in args.parts.split(","):
        if part == "update":
            cfg = AgentConfig(batch_sac=args.batch_sac, batch_latent=args.batch_latent)
            programs = update_programs(seed_counts, strategies, cfg)
        else:
            programs = module_programs(part, seed_counts, strategies, args.batch)
        medians = time_round_robin(programs, args.iters)
        one_s = medians["one seed", 1]
        batch = (f"{args.batch_sac}/{args.batch_latent}" if part == "update"
                 else str(args.batch))
        for (strategy, n), seconds in medians.items():
            rows.append({"part": part, "batch": batch, "strategy": strategy, "seeds": n,
                         "ms": round(seconds * 1e3, 2), "ratio": round(seconds / one_s, 2)})
            print(f"{part:8} {strategy:9} N={n}  {seconds * 1e3:9.2f} ms  "
                  f"{seconds / one_s:6.2f}× one seed", flush=True)
    for row in rows:
        print(json.dumps({"device": f"{device.platform}:{device.device_kind}", **row}))
    return rows


if __name__ == "__main__":
    main()
