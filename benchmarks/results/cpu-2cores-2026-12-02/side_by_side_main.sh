#!/usr/bin/env bash
# main against the PyTorch port on this 2-core CPU, alternating, in one command (from the repo root).
set -u
for round in 1 2 3; do
  echo "== round $round port"
  PEER_DIR=.peer/slac.pytorch .peer/venv/bin/python "$PEER_BENCH" --iters 5 --warmup 1 --threads 2 2>&1 | tail -1
  echo "== round $round slacjax"
  JAX_PLATFORMS=cpu .venv/bin/python -m experiments.bench --iters 5 --warmup 1 2>&1 | tail -1
done
echo "== port"
PEER_DIR=.peer/slac.pytorch .peer/venv/bin/python "$PEER_BENCH" --iters 5 --warmup 1 --threads 2 2>&1 | tail -1
echo "== slacjax --seeds 2"
JAX_PLATFORMS=cpu .venv/bin/python -m experiments.bench --iters 3 --warmup 1 --seeds 2 2>&1 | tail -1
