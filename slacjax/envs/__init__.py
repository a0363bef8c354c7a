"""Pixel environments for slacjax: DeepMind Control Suite and Gymnasium MuJoCo tasks.

    env = make("cheetah_run", seed=0)                    # gymnasium.Env, 64×64×3 uint8
    envs = make_vector("cheetah_run", num_envs=4)        # AsyncVectorEnv, spawned workers

Importing this package loads neither dm_control, gymnasium nor mujoco: `make` first fixes the
OpenGL backend (`ensure_gl_backend`, see gl.py), then imports them.
"""

from slacjax.envs.factory import RENDER_QUALITIES, make
from slacjax.envs.gl import ensure_gl_backend
from slacjax.envs.vector import make_vector

__all__ = ["RENDER_QUALITIES", "ensure_gl_backend", "make", "make_vector"]
