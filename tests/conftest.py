"""Set before any test module imports JAX or MuJoCo: CPU JAX, a persistent compile cache,
and a headless GL backend (an already exported MUJOCO_GL wins)."""

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_REPO / ".jax_cache"))
os.environ.setdefault("MUJOCO_GL", "egl")
