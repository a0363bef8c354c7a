"""Set before any test module imports JAX or MuJoCo: CPU JAX, a persistent compile cache,
and a headless GL backend (an already exported MUJOCO_GL wins)."""

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_REPO / ".jax_cache"))
# Every program into the cache, however quick to compile: the launcher tests start many
# processes that compile the same small programs (acting, replay writes, init).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("MUJOCO_GL", "egl")
# The tests compile many programs and run each a few times on tiny batches: LLVM's
# optimisations cost more compile time than they save at run time (the bench's tiny update:
# 43 s to compile, 0.18 s to run at the default level; 30 s and 0.31 s without them), and so
# do XLA:CPU's MLIR fusion emitters (the smoke preset's pretraining and fused update: 12 s of
# compiling at level 0, 8 s with the older emitters; the same 0.5 s per update).
# Subprocesses inherit them (add flags with `tests.helpers.xla_flags`).
_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
for _flag in _FAST_COMPILE:
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()


def pytest_collection_modifyitems(items):
    """Tests marked `slow(seconds)` (minutes of compiling on a CPU) start first, longest first,
    so that the workers of `pytest -n 2` do not end with one of them alone on a long test."""
    def expected_seconds(item):
        marker = item.get_closest_marker("slow")
        return marker.args[0] if marker else 0

    items.sort(key=expected_seconds, reverse=True)
