#!/usr/bin/env bash
# The GPU proof in one script (issue: fused update ≤ 10.8 ms on one H100; cheetah_run 100k env
# steps inside the time budget). On the offline GPU machine, from the repo root:
#
#   source .whl/bootstrap.sh; bash experiments/gpu_check.sh "$OUT"
#
# Writes everything into the output folder: machine.txt, bench_*.json (the benchmarks' JSON
# lines) with their full logs, the run dir of the 100k cheetah_run (metrics, learning curve,
# reconstructions) and log.txt. Every step has its own time limit, and the whole script stops
# at BUDGET_S seconds (default 560), so what finished always comes back.
# SLACJAX_GPU_CHECK_TINY=1 runs the same steps at toy sizes: the CPU dry run of this script.
# RUN_ARGS="key=value ..." replaces the training run's overrides; RESERVE_S (default 100) is
# the time kept after the run for the last benchmarks.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTPUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
budget=${BUDGET_S:-560}
tiny=${SLACJAX_GPU_CHECK_TINY:-0}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/slacjax-jax-cache}
export PYTHONUNBUFFERED=1

log() { echo "[$(date +%T) +$(( $(date +%s) - start ))s] $*" | tee -a "$out/log.txt"; }
left() { echo $(( budget - ($(date +%s) - start) )); }

# step NAME LIMIT_S COMMAND...: runs COMMAND with at most min(LIMIT_S, time left), logs to NAME.txt
# and keeps its last line (the JSON of our benchmarks) as NAME.json.
step() {
  local name=$1 limit=$2; shift 2
  local avail; avail=$(left)
  (( avail < limit )) && limit=$avail
  if (( limit < 20 )); then log "skip $name: out of time"; return; fi
  log "run $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$out/$name.txt" 2>&1
  log "done $name: exit $?"
  tail -n 1 "$out/$name.txt" > "$out/$name.json"
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  python3 -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  date -u +%Y-%m-%dT%H:%M:%SZ
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

if [ "$tiny" = 1 ]; then
  sizes=(--batch-sac 4 --batch-latent 2 --capacity 600 --iters 2 --warmup 1)
  env_steps=20
  run_args=(preset=smoke)
else
  sizes=(--iters 40 --warmup 3)
  env_steps=1000
  # The protocol's defaults (10k random agent steps, 100k pretraining updates, then 1 env step
  # + 1 fused update per agent step), evaluated every 20k env steps with 5 episodes per policy
  # to fit the time budget. Pretraining dispatches one update per call: asynchronous dispatch
  # keeps the device busy, and it does not depend on how the backend runs loops.
  run_args=(env_steps=100000 eval_every=20000 eval_episodes=5 checkpoint_every=100000
            pretrain_updates_per_dispatch=1 pretrain_log_every=5000 log_every=2000)
fi

# RUN_ARGS replaces the run's overrides, e.g. a scaled protocol when less device time is left.
if [ -n "${RUN_ARGS:-}" ]; then read -ra run_args <<< "$RUN_ARGS"; fi
reserve=${RESERVE_S:-100}

step bench_fp32_k1 150 python3 -m experiments.bench "${sizes[@]}" --scan 1
step bench_env_default 45 python3 -m experiments.bench_env task=cheetah_run steps=$env_steps render_quality=default
step bench_env_fast 45 python3 -m experiments.bench_env task=cheetah_run steps=$env_steps render_quality=fast
# The 100k run gets what is left but RESERVE_S, kept for the benchmarks that follow it.
step run_cheetah_100k $(( $(left) - reserve )) python3 -m experiments.run task=cheetah_run \
  run_dir="$out/cheetah_run" progress=false "${run_args[@]}"
step bench_fp32_k10 90 python3 -m experiments.bench "${sizes[@]}" --scan 10
step bench_bf16_k10 90 python3 -m experiments.bench "${sizes[@]}" --scan 10 --dtype bfloat16
log "finished in $(( $(date +%s) - start ))s"
