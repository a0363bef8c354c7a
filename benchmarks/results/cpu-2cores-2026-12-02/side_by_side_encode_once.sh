#!/usr/bin/env bash
# Lever 5 (the latent batch encoded once): side by side on this 2-core CPU, in one command:
# the PyTorch port, slacjax before (A: ff1828f) and after (B: the tree in $B, encode once).
# Usage: A=<checkout of ff1828f> B=<checkout with the change> bash side_by_side_encode_once.sh
set -u
cd /work/main
for round in 1 2; do
  echo "== round $round port"; PEER_DIR=.peer/slac.pytorch .peer/venv/bin/python "$PEER_BENCH" --iters 3 --warmup 1 --threads 2 2>&1 | tail -1
  for side in A B; do
    echo "== round $round slacjax $side"
    (cd "${!side}" && JAX_PLATFORMS=cpu /work/main/.venv/bin/python -m experiments.bench --iters 3 --warmup 1 --capacity 10000 2>&1 | tail -1)
  done
done
