#!/usr/bin/env bash
# Side by side on this 2-core CPU: the PyTorch port, slacjax (this tree), slacjax at 71bb4f2.
cd /work/main
for round in 1 2; do
  echo "== round $round port"; PEER_DIR=.peer/slac.pytorch .peer/venv/bin/python "$PEER_BENCH" --iters 3 --warmup 1 --threads 2 2>&1 | tail -1
  echo "== round $round slacjax"; JAX_PLATFORMS=cpu .venv/bin/python -m experiments.bench --iters 3 --warmup 1 --capacity 10000 2>&1 | tail -1
  echo "== round $round baseline"; (cd /tmp/slacjax_baseline && JAX_PLATFORMS=cpu /work/main/.venv/bin/python -m experiments.bench --iters 3 --warmup 1 --capacity 10000 2>&1 | tail -1)
done
