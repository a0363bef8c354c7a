"""Summarises a results folder of experiments/gpu_check.sh as Markdown, on stdout:

    python scripts/gpu_check_summary.py OUT_DIR > OUT_DIR/summary.md

Reads OUT_DIR/log.txt (the machine), bench.jsonl (the benchmarks' and profiles' JSON lines)
and metrics.jsonl (the run's rows): update times, kernels per update, and the run's
wall-clock by phase with its evaluations beside SLAC's published mean at the same env step.
Phase times are differences of the rows' `wall_time`, so they are as fine as the log cadence.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import yaml

BENCH_COLUMNS = (("update_ms_median", "fused update ms (median)"), ("update_ms_p90", "p90"),
                 ("updates_per_s", "updates/s"), ("latent_update_ms_median", "latent update ms"),
                 ("compile_s", "compile s"), ("peak_device_mem_mb", "peak device MB"),
                 ("recompiles_after_warmup", "recompiles"), ("seeds_cost_ratio", "N seeds / 1"),
                 ("conv_formulation", "formulation"))
PROFILE_COLUMNS = (("what", "update"), ("call", "call"), ("kernels_per_update", "kernels/update"),
                   ("wall_ms_per_update", "wall ms/update"),
                   ("kernel_busy_ms_per_update", "busy ms/update"),
                   ("idle_ms_per_update", "idle ms/update"))
ENV_COLUMNS = (("agent_steps_per_s", "agent steps/s"), ("env_steps_per_s", "env steps/s"),
               ("render_ms", "render ms/frame"))


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The JSON objects of a file, one a line; a missing file or a torn line is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def table(rows: list[tuple[str, dict]], columns) -> list[str]:
    """A Markdown table: one row per (step name, result), the given (key, header) columns."""
    lines = ["| step | " + " | ".join(header for _, header in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for name, result in rows:
        cells = [str(result.get(key, "")) for key, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def phase_times(rows: list[dict]) -> list[tuple[str, float, str]]:
    """(phase, seconds, rate) of collection, pretraining and training, from the rows' last
    wall times; training includes its evaluations, which are listed apart."""
    last = {}
    for row in rows:
        if row.get("phase") in ("collect", "pretrain", "train", "eval"):
            last[row["phase"]] = row
    phases, before = [], {"wall_time": 0.0, "env_step": 0, "agent_step": 0}
    for phase in ("collect", "pretrain", "train"):
        end = last.get(phase)
        if phase == "train" and "eval" in last and (
                end is None or last["eval"]["wall_time"] > end["wall_time"]):
            end = last["eval"]
        if end is None:
            continue
        seconds = end["wall_time"] - before["wall_time"]
        if phase == "pretrain":
            rate = f"{end.get('pretrain_update', 0) / seconds:.1f} updates/s"
        elif phase == "collect":
            rate = f"{(end['env_step'] - before['env_step']) / seconds:.0f} env steps/s"
        else:
            rate = f"{(end['agent_step'] - before['agent_step']) / seconds:.1f} agent steps/s"
        phases.append((phase, seconds, rate))
        before = end
    return phases


def run_lines(rows: list[dict], task: str) -> list[str]:
    """The run's wall-clock by phase and its evaluations beside the paper's mean."""
    if not rows:
        return ["No run rows (metrics.jsonl) in this folder."]
    lines = ["| phase | wall-clock s | rate |", "| --- | --- | --- |"]
    lines += [f"| {phase} | {seconds:.1f} | {rate} |"
              for phase, seconds, rate in phase_times(rows)]
    last = rows[-1]
    lines += ["", f"Last row: env step {last.get('env_step')}, its `wall_time` "
                  f"{last.get('wall_time', 0):.1f} s."]
    evals = [row for row in rows if row.get("phase") == "eval"]
    if evals:
        from slacjax import reference  # NumPy only: no JAX start-up for a summary

        lines += ["", "| env step | stochastic | greedy | SLAC paper (mean of 10 seeds) | "
                      "evaluation s |", "| --- | --- | --- | --- | --- |"]
        for row in evals:
            paper = reference.mean_at(task, row["env_step"])
            lines.append(f"| {row['env_step']} | {row['return_stochastic']:.1f} | "
                         f"{row['return_greedy']:.1f} | "
                         f"{'' if paper is None else f'{paper:.0f}'} | "
                         f"{row.get('eval_seconds', '')} |")
    return lines


def run_task(out: pathlib.Path) -> str:
    """The run's task, from its config.yaml (gpu_check.sh's run: cheetah_run)."""
    config = out / "config.yaml"
    if config.exists():
        return str((yaml.safe_load(config.read_text()) or {}).get("task", "cheetah_run"))
    return "cheetah_run"


def summary(out: pathlib.Path, task: str) -> str:
    machine = [line.split("machine: ", 1)[1] for line in
               (out / "log.txt").read_text().splitlines() if "machine: " in line] \
        if (out / "log.txt").exists() else []
    results = [(row["step"], row["result"]) for row in read_jsonl(out / "bench.jsonl")]
    benches = [(n, r) for n, r in results if n.startswith("bench_") and "update_ms_median" in r]
    profiles = [(n, r) for n, r in results if n.startswith("profile")]
    envs = [(n, r) for n, r in results if n.startswith("bench_env")]
    lines = [f"# GPU check: {out.name}", ""] + [f"- {line}" for line in machine]
    lines += ["", "## Update step (`experiments.bench`)", ""] + table(benches, BENCH_COLUMNS)
    lines += ["", "## Where an update's time goes (`benchmarks.profile_update`)", ""]
    lines += table(profiles, PROFILE_COLUMNS)
    lines += ["", "## Environment (`experiments.bench_env`)", ""] + table(envs, ENV_COLUMNS)
    lines += ["", f"## The run: {task}", ""] + run_lines(read_jsonl(out / "metrics.jsonl"), task)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path, help="a results folder of gpu_check.sh")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        print(f"{args.out}: not a folder", file=sys.stderr)
        return 2
    sys.stdout.write(summary(args.out, run_task(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
