#!/usr/bin/env bash
# Lever 5 (the latent batch encoded once), A/B on this 2-core CPU, alternating, in one command:
# A = ff1828f, B = the same with the SAC half reusing the ELBO's features.
# Usage: A=<checkout of ff1828f> B=<checkout with the change> bash ab_encode_once.sh
set -u
for round in 1 2 3; do
  for side in A B; do
    echo "== round $round slacjax $side"
    (cd "${!side}" && JAX_PLATFORMS=cpu /work/main/.venv/bin/python -m experiments.bench --iters 6 --warmup 1 --capacity 10000 2>&1 | tail -1)
  done
done
