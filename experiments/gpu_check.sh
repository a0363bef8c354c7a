#!/usr/bin/env bash
# The GPU check: the paper's protocol for 100k env steps of cheetah_run, then the update-step
# benchmarks and profiles, into one dated results folder. On any machine with an NVIDIA GPU,
# after the README's GPU install (`make setup`, then JAX's CUDA wheels into .venv), from the
# repository root:
#
#   bash experiments/gpu_check.sh                  # -> benchmarks/results/gpu-<date>/
#   bash experiments/gpu_check.sh OUT_DIR
#
# OUT_DIR gets: log.txt (the machine, every step's command, exit status and wall time, the
# benchmarks' JSON lines), NAME.txt (each step's full output), bench.jsonl (every benchmark's
# and profile's JSON line), the run's config.yaml, metrics.jsonl, learning_curve.png,
# diagnostics.png and media/, report/ (`experiments.report` of the run: its return at 100k
# beside the paper's) and summary.md (update times, kernels per latent update, the run's
# wall-clock by phase; scripts/gpu_check_summary.py). Checkpoints stay out of it.
#
# The whole list takes about 40 minutes on an H100. Environment:
#   STEPS="run bench_fp32_k1 ..."  which steps, in that order (names in the `case` below)
#   RUN_ARGS="k=v ..."             replaces the run's overrides (e.g. env_steps=30000)
#   LIMIT_S=N                      stop starting steps after N seconds; a running step is
#                                  stopped at N (the run at a checkpoint: rerun to resume)
#   PYTHON=path                    the interpreter (default .venv/bin/python, else python3)
#   SLACJAX_GPU_CHECK_TINY=1       toy sizes, no GPU needed: a dry run of this script on a CPU
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu-$(date +%Y-%m-%d-%H%M)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
limit_total=${LIMIT_S:-0}
tiny=${SLACJAX_GPU_CHECK_TINY:-0}
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$work/jax-cache}
export MUJOCO_GL=${MUJOCO_GL:-egl}
export PYTHONUNBUFFERED=1

log() { echo "[$(date +%T) +$(( $(date +%s) - start ))s] $*" | tee -a "$out/log.txt"; }

# step NAME LIMIT_S COMMAND...: runs COMMAND for at most LIMIT_S seconds (and within LIMIT_S
# of the whole script, when set), its output in NAME.txt; a benchmark's last line, its JSON,
# goes into the log and bench.jsonl.
step() {
  local name=$1 limit=$2; shift 2
  if (( limit_total > 0 )); then
    local left=$(( limit_total - ($(date +%s) - start) ))
    (( left < limit )) && limit=$left
    if (( limit < 30 )); then log "skip $name: LIMIT_S reached"; return; fi
  fi
  log "run $name (limit ${limit}s): $*"
  local began=$(date +%s)
  timeout --signal=INT --kill-after=30 "$limit" "$@" > "$out/$name.txt" 2>&1
  local status=$?
  log "done $name: exit $status, $(( $(date +%s) - began ))s"
  case $name in
    bench*|profile*)
      local json; json=$(tail -n 1 "$out/$name.txt")
      log "json $name: $json"
      [[ $json == "{"* ]] && echo "{\"step\": \"$name\", \"result\": $json}" >> "$out/bench.jsonl"
      ;;
  esac
}

{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  "$py" -c "import jax, sys; print('python', sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
  echo "cpu cores $(nproc)"
} 2>&1 | while read -r line; do log "machine: $line"; done

if [ "$tiny" = 1 ]; then
  sizes=(--batch-sac 4 --batch-latent 2 --capacity 600 --iters 2 --warmup 1)
  seed_sizes=("${sizes[@]}")
  profile_sizes=(--batch-sac 4 --batch-latent 2 --capacity 600 --steps 2)
  env_steps=20
  run_args=(preset=smoke)
else
  if ! "$py" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
    log "no GPU: JAX runs on '$("$py" -c 'import jax; print(jax.default_backend())')'." \
        "Install JAX's CUDA wheels first (README, Install), or SLACJAX_GPU_CHECK_TINY=1 for a dry run"
    exit 2
  fi
  sizes=(--iters 30 --warmup 3)
  seed_sizes=(--iters 10 --warmup 2)
  profile_sizes=(--steps 20)
  env_steps=1000
  # The paper's protocol to 100k env steps (10k env steps of random collection = 2,500 agent
  # steps at action repeat 4, 100k pretraining updates, then 1 env step + 1 fused update per
  # agent step, evaluations of 10 + 10 episodes every 10k env steps). Pretraining dispatches
  # one update per call, the setting of BENCHMARKS.md's H100 rates.
  run_args=(env_steps=100000 checkpoint_every=100000 pretrain_updates_per_dispatch=1
            pretrain_log_every=5000 log_every=2000)
fi
if [ -n "${RUN_ARGS:-}" ]; then read -ra run_args <<< "$RUN_ARGS"; fi

all_steps="run bench_fp32_k1 bench_fp32_k10 bench_bf16_k10 profile_latent profile_latent_compiled
  profile_fused bench_seeds5_loop bench_seeds5_patches bench_seeds5_grouped bench_k1_phase_grads
  bench_k1_gemm bench_env_default bench_env_fast"
for name in ${STEPS:-$all_steps}; do
  case $name in
    run) step run 3600 "$py" -m experiments.run task=cheetah_run run_dir="$work/cheetah_run" \
           progress=false wandb.enabled=false "${run_args[@]}" ;;
    bench_fp32_k1) step "$name" 300 "$py" -m experiments.bench "${sizes[@]}" --scan 1 ;;
    bench_fp32_k10) step "$name" 300 "$py" -m experiments.bench "${sizes[@]}" --scan 10 ;;
    bench_bf16_k10) step "$name" 300 "$py" -m experiments.bench "${sizes[@]}" --scan 10 \
                      --dtype bfloat16 ;;
    bench_k1_phase_grads) step "$name" 300 "$py" -m experiments.bench "${sizes[@]}" --scan 1 \
                            --formulation phase_grads ;;
    bench_k1_gemm) step "$name" 300 "$py" -m experiments.bench "${sizes[@]}" --scan 1 \
                     --formulation gemm ;;
    bench_seeds5_*) step "$name" 600 "$py" -m experiments.bench "${seed_sizes[@]}" --seeds 5 \
                      --seed-conv "${name#bench_seeds5_}" ;;
    profile_latent) step "$name" 300 "$py" -m benchmarks.profile_update --what latent \
                      --call jit "${profile_sizes[@]}" ;;
    profile_latent_compiled) step "$name" 300 "$py" -m benchmarks.profile_update --what latent \
                               --call compiled "${profile_sizes[@]}" ;;
    profile_fused) step "$name" 300 "$py" -m benchmarks.profile_update --what fused \
                     "${profile_sizes[@]}" ;;
    bench_env_default) step "$name" 300 "$py" -m experiments.bench_env task=cheetah_run \
                         steps=$env_steps render_quality=default ;;
    bench_env_fast) step "$name" 300 "$py" -m experiments.bench_env task=cheetah_run \
                      steps=$env_steps render_quality=fast ;;
    *) log "unknown step $name" ;;
  esac
done

run_dir="$work/cheetah_run"
if [ -f "$run_dir/metrics.jsonl" ]; then
  for file in config.yaml metrics.jsonl learning_curve.png diagnostics.png; do
    [ -f "$run_dir/$file" ] && cp "$run_dir/$file" "$out/"
  done
  [ -d "$run_dir/media" ] && cp -r "$run_dir/media" "$out/"
  # The run beside the paper's curve and its 100k figure (fails, saying why, without an
  # evaluation).
  "$py" -m experiments.report "$run_dir" out="$out/report" >> "$out/log.txt" 2>&1 \
    || log "no report (see above)"
fi
"$py" scripts/gpu_check_summary.py "$out" > "$out/summary.md" 2>> "$out/log.txt" \
  && cat "$out/summary.md"
log "finished in $(( $(date +%s) - start ))s; results in $out"
