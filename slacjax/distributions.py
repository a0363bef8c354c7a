"""Diagonal Gaussians and the tanh-squashed Gaussian of the policy, as plain functions.

A distribution is a `(mean, std)` pair of arrays of the same shape [..., D]; every function
reduces over the last axis only, so batch and time axes pass through untouched.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def sample(key: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Reparameterised sample, same shape as `mean`."""
    return mean + std * jax.random.normal(key, mean.shape, mean.dtype)


def log_prob(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log N(x; mean, diag(std²)) summed over the last axis: [..., D] -> [...]."""
    z = (x - mean) / std
    return jnp.sum(-0.5 * z * z - jnp.log(std) - 0.5 * LOG_2PI, axis=-1)


def kl(mean_q: jax.Array, std_q: jax.Array, mean_p: jax.Array, std_p: jax.Array) -> jax.Array:
    """Analytic KL(q ‖ p) of diagonal Gaussians summed over the last axis: [..., D] -> [...]."""
    var_ratio = jnp.square(std_q / std_p)
    mean_term = jnp.square((mean_q - mean_p) / std_p)
    return 0.5 * jnp.sum(var_ratio + mean_term - 1.0 - jnp.log(var_ratio), axis=-1)


def tanh_log_prob(u: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log-density of a = tanh(u), u ~ N(mean, std²): [..., D] -> [...].

    Uses log(1 - tanh(u)²) = 2·(log 2 − u − softplus(−2u)), which stays finite where tanh
    saturates (a = ±1), unlike log(1 − a² + ε).
    """
    log_det = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return log_prob(u, mean, std) - jnp.sum(log_det, axis=-1)
