"""The benchmark CLI runs end to end and reports what it promises (a CLI test, not a timing)."""

import json

import jax
import jax.numpy as jnp
import pytest

from experiments import bench


@pytest.mark.slow(70)
def test_bench_prints_a_json_last_line_without_recompiling(capsys):
    result = bench.main(["--batch-sac", "2", "--batch-latent", "2", "--iters", "2", "--warmup",
                         "1", "--capacity", "600", "--action-dim", "3", "--formulation", "phases"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    for key in ("device", "jax", "batch_sac", "batch_latent", "update_ms_median", "update_ms_p90",
                "updates_per_s", "latent_update_ms_median", "update_ms_pipelined",
                "latent_update_ms_pipelined", "compile_s", "peak_device_mem_mb",
                "peak_host_rss_mb", "recompiles_after_warmup"):
        assert key in result, key
    for program in ("update", "latent_update"):
        sizes = [result[f"{program}_{measure}"] for measure in ("lowered_ops", "compiled_ops",
                                                                   "kernels")]
        assert all(isinstance(size, int) and size > 0 for size in sizes), (program, sizes)
    assert result["latent_update_kernels"] < result["update_kernels"]
    assert result["recompiles_after_warmup"] == 0
    assert result["finite_losses"]
    assert result["update_ms_median"] > 0 and result["batch_sac"] == 2
    assert result["conv_formulation"] == "phases"  # not the CPU's default: the flag reached it


def test_bench_formulation_needs_unbatched_convolutions(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "2", "--seed-conv", "loop", "--formulation", "gemm"])
    assert "--formulation applies to one agent" in capsys.readouterr().err
    assert bench.parse_args(["--seeds", "2", "--seed-conv", "grouped",
                             "--formulation", "gemm"]).formulation == "gemm"


@pytest.mark.parametrize("flag", ["--batch-sac", "--iters", "--scan"])
def test_bench_refuses_non_positive_sizes(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args([flag, "0"])
    assert exit_info.value.code == 2
    assert "must be positive" in capsys.readouterr().err


def test_program_sizes_count_operations_and_kernels():
    lowered = jax.jit(lambda x: jnp.sin(x) + x).lower(jnp.ones(8))
    assert bench.lowered_ops(lowered.as_text()) == 2  # sine, add
    instructions, kernels = bench.compiled_size(lowered.compile().as_text())
    assert kernels == 1 and instructions > kernels  # one fusion of both
    looped = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jnp.sin(y) * 2, x))
    # The loop's body and condition count once each, however often they run.
    assert bench.compiled_size(looped.lower(jnp.ones(8)).compile().as_text())[1] > 3


def test_tiny_sets_both_batches_and_excludes_explicit_ones(capsys):
    args = bench.parse_args(["--tiny"])
    assert (args.batch_sac, args.batch_latent) == bench.TINY_BATCHES
    assert (bench.parse_args([]).batch_sac, bench.parse_args([]).batch_latent) == (256, 32)
    with pytest.raises(SystemExit):
        bench.parse_args(["--tiny", "--batch-sac", "16"])
    assert "--tiny sets the batches" in capsys.readouterr().err
