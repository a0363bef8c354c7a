"""Chooses the OpenGL backend MuJoCo renders with, before anything binds one.

`mujoco` and `dm_control` read `MUJOCO_GL` once, when first imported, and keep that backend
for the life of the process. So `ensure_gl_backend()` must run before either is imported
(`slacjax.envs.make` calls it before its lazy imports). Rules:

- `MUJOCO_GL` set by the user: respected as is.
- unset: try `egl`, then `osmesa`, each probed in a short subprocess (a failed GL
  initialisation can leave a process in a broken state, so this process never tries one),
  and export the first that works as `MUJOCO_GL`. Subprocesses (vector-env workers) inherit it.
- `PYOPENGL_PLATFORM` is left alone; MuJoCo and dm_control set it from `MUJOCO_GL`.

Headless hosts need the Debian packages `libegl1 libegl-mesa0 libgl1-mesa-dri` (EGL, also
Mesa's software renderer) or `libosmesa6` (OSMesa).

GPU hosts: EGL renders on the GPU, next to JAX. JAX preallocates 75% of GPU memory
(`XLA_PYTHON_CLIENT_MEM_FRACTION=.75`); in a measured run EGL still got its context, but if
the first render fails with an EGL/GL error once JAX holds the GPU, set
`XLA_PYTHON_CLIENT_MEM_FRACTION=0.6` (or `XLA_PYTHON_CLIENT_PREALLOCATE=false`) before JAX
starts. `MUJOCO_EGL_DEVICE_ID` picks which GPU EGL uses.

At exit, every simulator still open is closed (`close_at_exit`) before MuJoCo's and
dm_control's own exit handlers terminate their EGL displays: both get the same display of the
same device, so when envs of both suites lived in one process, whichever terminated it first
left the other's contexts to fail with EGL tracebacks at exit.

MuJoCo's own warnings (e.g. unstable simulation) go to absl logging once dm_control is
imported, otherwise MuJoCo appends them to `MUJOCO_LOG.TXT` in the working directory (the
repository git-ignores that file).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import weakref

HEADLESS_BACKENDS = ("egl", "osmesa")
DEBIAN_PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1-mesa-dri", "osmesa": "libosmesa6"}

# Simulators holding a GL context, closed at exit; weak: an env dropped early is not kept.
_OPEN = weakref.WeakSet()
# Creates and frees a tiny context: enough to prove the backend's libraries and driver work.
_PROBE_SCRIPT = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"
_PROBE_TIMEOUT_S = 60.0
# MuJoCo and dm_control accept these spellings of "glfw" in MUJOCO_GL.
_GLFW_ALIASES = ("on", "enable", "enabled", "true", "1")


def probe_backend(backend: str) -> str | None:
    """Tries `backend` in a fresh interpreter. Returns None if it works, else why not."""
    env = {**os.environ, "MUJOCO_GL": backend}
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT], env=env, capture_output=True, text=True,
            timeout=_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"probe timed out after {_PROBE_TIMEOUT_S:.0f} s"
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else f"probe exited with status {result.returncode}"


def no_backend_message(failures: dict[str, str]) -> str:
    """The error text for a host where no headless backend works; `failures`: backend -> why."""
    tried = "; ".join(f"{backend}: {why}" for backend, why in failures.items())
    return (
        "No headless OpenGL backend works for MuJoCo rendering "
        f"(tried {tried}). Install EGL (Debian/Ubuntu: "
        f"apt-get install {DEBIAN_PACKAGES['egl']}) or OSMesa "
        f"(apt-get install {DEBIAN_PACKAGES['osmesa']}), or set MUJOCO_GL yourself."
    )


def bound_backends() -> dict[str, str]:
    """The backend each already-imported GL user chose at its import: module -> backend."""
    bound = {}
    mujoco = sys.modules.get("mujoco")
    context_class = getattr(mujoco, "GLContext", None)
    if context_class is not None:
        bound["mujoco"] = context_class.__module__.rsplit(".", 1)[-1]  # "mujoco.egl" -> "egl"
    dm_render = sys.modules.get("dm_control._render")
    if dm_render is not None and getattr(dm_render, "BACKEND", None):
        bound["dm_control"] = dm_render.BACKEND
    return bound


def _check_bound(backend: str | None) -> None:
    """Raises if mujoco/dm_control were imported before the backend was fixed, or with another."""
    bound = bound_backends()
    if backend is None and bound:
        raise RuntimeError(
            f"{' and '.join(bound)} was imported before MUJOCO_GL was set, and bound the "
            f"{bound} OpenGL backend(s) for this process. Call "
            "slacjax.envs.ensure_gl_backend() (or set MUJOCO_GL=egl or osmesa) before importing "
            "mujoco, dm_control or Gymnasium's MuJoCo environments."
        )
    mismatched = {module: used for module, used in bound.items() if used != backend}
    if mismatched:
        raise RuntimeError(
            f"MUJOCO_GL={backend!r}, but {mismatched} was already imported with another OpenGL "
            "backend, which cannot change inside a process. Set MUJOCO_GL before importing "
            "mujoco, dm_control or Gymnasium's MuJoCo environments."
        )


def ensure_gl_backend() -> str:
    """Fixes the process's MuJoCo OpenGL backend (see the module docstring) and returns it.

    Cheap after the first call: the choice lives in `os.environ["MUJOCO_GL"]`.
    """
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    if requested in _GLFW_ALIASES:
        requested = "glfw"
    if requested:
        _check_bound(requested)
        return requested
    _check_bound(None)
    failures = {}
    for backend in HEADLESS_BACKENDS:
        failure = probe_backend(backend)
        if failure is None:
            os.environ["MUJOCO_GL"] = backend
            return backend
        failures[backend] = failure
    raise RuntimeError(no_backend_message(failures))


def _close_open() -> None:
    for simulator in list(_OPEN):
        simulator.close()


def close_at_exit(simulator) -> None:
    """Closes `simulator` at interpreter exit unless it is closed before. Call it right after
    the simulator made its GL context: atexit runs the last registered first, so moving this
    handler last runs it before the display-terminating handlers registered so far."""
    _OPEN.add(simulator)
    atexit.unregister(_close_open)
    atexit.register(_close_open)


def forget_at_exit(simulator) -> None:
    """`simulator` was closed: nothing to do for it at exit."""
    _OPEN.discard(simulator)
