"""Gaussian maths against scipy/numpy computed independently."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from slacjax import distributions as dist


@pytest.fixture
def gaussians():
    rng = np.random.default_rng(0)
    shape = (4, 5, 7)
    return (rng.normal(size=shape), rng.uniform(0.1, 2.0, shape),
            rng.normal(size=shape), rng.uniform(0.1, 2.0, shape), rng.normal(size=shape))


def test_log_prob_matches_scipy(gaussians):
    mean, std, _, _, x = gaussians
    expected = stats.norm(mean, std).logpdf(x).sum(-1)
    got = dist.log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(std))
    chex.assert_shape(got, (4, 5))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_kl_matches_monte_carlo_free_formula(gaussians):
    mq, sq, mp, sp, _ = gaussians
    # KL of univariate Normals from their entropies/cross-entropies, term by term.
    cross_entropy = 0.5 * np.log(2 * np.pi * sp**2) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2)
    entropy = stats.norm(mq, sq).entropy()
    expected = (cross_entropy - entropy).sum(-1)
    got = dist.kl(*map(jnp.asarray, (mq, sq, mp, sp)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dist.kl(*map(jnp.asarray, (mq, sq, mq, sq))), 0.0, atol=1e-5)


def test_kl_agrees_with_sampling():
    rng = np.random.default_rng(1)
    mq, sq, mp, sp = 0.3, 0.7, -0.2, 1.3
    x = rng.normal(mq, sq, size=400_000)
    mc = np.mean(stats.norm(mq, sq).logpdf(x) - stats.norm(mp, sp).logpdf(x))
    got = float(dist.kl(*(jnp.array([v]) for v in (mq, sq, mp, sp))))
    assert abs(got - mc) < 5e-3


def test_tanh_log_prob_is_change_of_variables():
    rng = np.random.default_rng(2)
    mean, std = rng.normal(size=(6, 2)), rng.uniform(0.2, 1.5, (6, 2))
    u = rng.normal(size=(6, 2)) * 3  # includes near-saturated tanh
    a = np.tanh(u)
    expected = (stats.norm(mean, std).logpdf(u) - np.log1p(-a**2 + 1e-300)).sum(-1)
    got = dist.tanh_log_prob(*map(jnp.asarray, (u, mean, std)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    assert np.all(np.isfinite(dist.tanh_log_prob(jnp.full((1, 2), 30.0), jnp.zeros((1, 2)),
                                                 jnp.ones((1, 2)))))
