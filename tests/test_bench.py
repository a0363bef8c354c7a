"""The benchmark CLI runs end to end and reports what it promises (a CLI test, not a timing)."""

import json

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
