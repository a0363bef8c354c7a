#!/usr/bin/env bash
# Longer alternation (8 timed calls each, 4 rounds) of the port and main on this 2-core CPU, in
# one command from the repo root: this VM's steal time moves single runs by ±25%.
set -u
for round in 1 2 3 4; do
  echo "== round $round port"
  PEER_DIR=.peer/slac.pytorch .peer/venv/bin/python "$PEER_BENCH" --iters 8 --warmup 1 --threads 2 2>&1 | tail -1
  echo "== round $round slacjax"
  JAX_PLATFORMS=cpu .venv/bin/python -m experiments.bench --iters 8 --warmup 1 --capacity 10000 2>&1 | tail -1
done
