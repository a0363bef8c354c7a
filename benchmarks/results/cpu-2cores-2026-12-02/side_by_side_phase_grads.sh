#!/usr/bin/env bash
# The strided convolutions' input gradients by output phase (formulation "phase_grads"), on this
# 2-core CPU, in one command from the repo root: the port, slacjax before (A: 40e4405, formulation
# "phases") and after (B), alternating.
# Usage: A=<checkout of 40e4405> B=<checkout with the change> bash side_by_side_phase_grads.sh
set -u
for round in 1 2 3; do
  echo "== round $round port"
  PEER_DIR=.peer/slac.pytorch .peer/venv/bin/python "$PEER_BENCH" --iters 5 --warmup 1 --threads 2 2>&1 | tail -1
  for side in A B; do
    echo "== round $round slacjax $side"
    (cd "${!side}" && JAX_PLATFORMS=cpu /work/main/.venv/bin/python -m experiments.bench --iters 5 --warmup 1 --capacity 10000 2>&1 | tail -1)
  done
done
