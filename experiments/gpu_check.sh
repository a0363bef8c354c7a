#!/usr/bin/env bash
# The GPU proof in one script: the 100k-env-step cheetah_run with the protocol's defaults first
# (it is what must finish inside the time budget), then as many benchmarks as the budget still
# allows. On the offline GPU machine, from the repo root:
#
#   source .whl/bootstrap.sh; bash experiments/gpu_check.sh "$OUT"
#
# Every step has its own time limit and the whole script stops at BUDGET_S seconds (default
# 570), so what finished always comes back. The output folder gets at most 8 files (the device
# tool returns no more): log.txt (this script's log, the machine, each step's exit and the
# benchmarks' JSON lines), metrics.jsonl, learning_curve.png and config.yaml of the run, its
# report.md next to the paper (experiments.report), and results.tar.gz with every step's full
# output, the run's pictures and the report's figures (no checkpoints).
#
# STEPS="run profile_latent ..." picks and orders the steps (names below); RUN_ARGS="k=v ..."
# replaces the run's overrides. SLACJAX_GPU_CHECK_TINY=1 runs everything at toy sizes: the CPU
# dry run of this script.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUTPUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/gpu_check.XXXXXX)
start=$(date +%s)
budget=${BUDGET_S:-570}
tiny=${SLACJAX_GPU_CHECK_TINY:-0}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/slacjax-jax-cache}
export PYTHONUNBUFFERED=1

log() { echo "[$(date +%T) +$(( $(date +%s) - start ))s] $*" | tee -a "$out/log.txt"; }
left() { echo $(( budget - ($(date +%s) - start) )); }

# step NAME LIMIT_S COMMAND...: runs COMMAND with at most min(LIMIT_S, time left), its output
# in NAME.txt; a benchmark's last line (its JSON) goes into the log.
step() {
  local name=$1 limit=$2; shift 2
  local avail; avail=$(left)
  (( avail < limit )) && limit=$avail
  if (( limit < 30 )); then log "skip $name: out of time"; return; fi
  log "run $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$work/$name.txt" 2>&1
  log "done $name: exit $?"
  case $name in bench*|profile*) log "json $name: $(tail -n 1 "$work/$name.txt")" ;; esac
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  python3 -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  nproc
} 2>&1 | while read -r line; do log "machine: $line"; done

if [ "$tiny" = 1 ]; then
  sizes=(--batch-sac 4 --batch-latent 2 --capacity 600 --iters 2 --warmup 1)
  seed_sizes=("${sizes[@]}")
  profile_sizes=(--batch-sac 4 --batch-latent 2 --capacity 600 --steps 2)
  env_steps=20
  run_args=(preset=smoke)
else
  sizes=(--iters 30 --warmup 3)
  seed_sizes=(--iters 10 --warmup 2)
  profile_sizes=(--steps 20)
  env_steps=1000
  # The protocol's defaults (random collection of 10k env steps = 2,500 agent steps at action
  # repeat 4, 100k pretraining updates, then 1 env step + 1 fused update per agent step:
  # 22,500 training agent steps to 100k env steps), evaluated once, at 100k env steps (10 + 10
  # episodes, ~12 s): at the measured rates (collection ~8 s, pretraining 309 s at 324
  # updates/s, training ~205 s at ~110 agent steps/s, start-up ~40 s) more evaluations would
  # not fit 9.5 minutes. Pretraining dispatches one update per call (the 324 updates/s rate).
  run_args=(env_steps=100000 eval_every=100000 checkpoint_every=100000
            pretrain_updates_per_dispatch=1 pretrain_log_every=5000 log_every=2000)
fi
if [ -n "${RUN_ARGS:-}" ]; then read -ra run_args <<< "$RUN_ARGS"; fi

for name in ${STEPS:-run profile_latent bench_seeds5_loop bench_fp32_k10}; do
  case $name in
    run) step run $(left) python3 -m experiments.run task=cheetah_run \
           run_dir="$work/cheetah_run" progress=false wandb.enabled=false "${run_args[@]}" ;;
    bench_fp32_k1) step "$name" 150 python3 -m experiments.bench "${sizes[@]}" --scan 1 ;;
    bench_fp32_k10) step "$name" 150 python3 -m experiments.bench "${sizes[@]}" --scan 10 ;;
    bench_fp32_k100) step "$name" 150 python3 -m experiments.bench "${sizes[@]}" --scan 100 --iters 3 ;;
    bench_k1_phase_grads) step "$name" 150 python3 -m experiments.bench "${sizes[@]}" --scan 1 \
                            --formulation phase_grads ;;
    bench_k1_gemm) step "$name" 150 python3 -m experiments.bench "${sizes[@]}" --scan 1 \
                     --formulation gemm ;;
    bench_bf16_k10) step "$name" 150 python3 -m experiments.bench "${sizes[@]}" --scan 10 --dtype bfloat16 ;;
    bench_seeds5_*) step "$name" 240 python3 -m experiments.bench "${seed_sizes[@]}" --seeds 5 \
                      --seed-conv "${name#bench_seeds5_}" ;;
    profile_latent) step "$name" 90 python3 -m benchmarks.profile_update --what latent \
                      "${profile_sizes[@]}" ;;
    profile_fused) step "$name" 120 python3 -m benchmarks.profile_update --what fused \
                     "${profile_sizes[@]}" ;;
    bench_env_default) step "$name" 60 python3 -m experiments.bench_env task=cheetah_run \
                         steps=$env_steps render_quality=default ;;
    bench_env_fast) step "$name" 60 python3 -m experiments.bench_env task=cheetah_run \
                      steps=$env_steps render_quality=fast ;;
    *) log "unknown step $name" ;;
  esac
done

run_dir="$work/cheetah_run"
# The run next to the paper's curve and its 100k figure (report.md; its PNGs in the archive).
[ -f "$run_dir/metrics.jsonl" ] && python3 -m experiments.report "$run_dir" \
  out="$work/report" >> "$out/log.txt" 2>&1 && cp "$work/report/report.md" "$out/"
for file in metrics.jsonl learning_curve.png config.yaml; do
  [ -f "$run_dir/$file" ] && cp "$run_dir/$file" "$out/"
done
log "finished in $(( $(date +%s) - start ))s"
tar -czf "$out/results.tar.gz" -C "$work" --exclude=checkpoints --exclude=wandb . 2>/dev/null
rm -rf "$work"
