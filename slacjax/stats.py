"""Statistics over seeds and tasks: bootstrap intervals of a mean, and the aggregate measures of
Agarwal et al. (NeurIPS 2021) — interquartile mean, optimality gap, performance profiles — with
stratified bootstrap intervals. NumPy only (no JAX), so reports load fast.

Scores across tasks are given as a list with one 1-D array of run scores per task (tasks may
have different numbers of runs; the pooled statistics then weigh a task by its runs).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_mean_ci(values: np.ndarray, resamples: int = RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0):
    """Percentile bootstrap interval of the mean over axis 0 (seeds or episodes), within the
    values' observed [min, max] (a resample's mean cannot leave it; the clip keeps rounding
    from doing so).

    values [n, ...] -> (low, high), each [...]. One value gives the value itself for both.
    """
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    low, high = _interval(values[picks].mean(axis=1), confidence)
    return within(low, high, values.min(axis=0), values.max(axis=0))


def bootstrap_difference_ci(first: np.ndarray, second: np.ndarray,
                            resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                            seed: int = 0) -> tuple[float, float, float]:
    """The difference of two groups' means (first − second: e.g. two implementations' seeds)
    with its percentile bootstrap interval, each group resampled on its own.

    first [n], second [m] -> (difference, low, high).
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
             for values in (first, second)]
    low, high = _interval(draws[0] - draws[1], confidence)
    return float(first.mean() - second.mean()), float(low), float(high)


def within(low, high, lowest, highest) -> tuple[np.ndarray, np.ndarray]:
    """The band [low, high] clipped to [lowest, highest] (arrays of one shape, or scalars)."""
    return np.clip(low, lowest, highest), np.clip(high, lowest, highest)


def std_band(mean, std, lowest: float = -np.inf, highest: float = np.inf):
    """mean ± std [S] for evaluations that logged no episode returns, clipped to the range
    the returns are known to lie in (DMC: [0, 1000]): a mean ± std band of returns that are
    all 0 or 950 would otherwise reach below 0. -> (low [S], high [S])."""
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    return within(mean - std, mean + std, lowest, highest)


def iqm(scores: Sequence[np.ndarray]) -> float:
    """Interquartile mean of all run scores pooled: the mean of the middle 50%, cutting
    floor(n / 4) scores at each end (as `scipy.stats.trim_mean(..., 0.25)`)."""
    pooled = np.sort(np.concatenate([np.ravel(task) for task in scores]))
    cut = int(0.25 * pooled.size)
    return float(pooled[cut:pooled.size - cut].mean())


def mean(scores: Sequence[np.ndarray]) -> float:
    """Mean over tasks of the mean over each task's runs."""
    return float(np.mean([np.mean(task) for task in scores]))


def median(scores: Sequence[np.ndarray]) -> float:
    """Median over tasks of the mean over each task's runs."""
    return float(np.median([np.mean(task) for task in scores]))


def optimality_gap(scores: Sequence[np.ndarray], target: float = 1.0) -> float:
    """How far the run scores pooled fall short of `target` on average (scores above it count
    as reaching it)."""
    pooled = np.concatenate([np.ravel(task) for task in scores])
    return float(np.mean(target - np.minimum(pooled, target)))


AGGREGATES: dict[str, Callable[[Sequence[np.ndarray]], float]] = {
    "IQM": iqm, "mean": mean, "median": median, "optimality gap": optimality_gap}


def stratified_resamples(scores: Sequence[np.ndarray], resamples: int, seed: int):
    """`resamples` draws of the scores, each task's runs resampled with replacement within
    that task -> a generator of lists shaped like `scores`."""
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(task), size=(resamples, len(task))) for task in scores]
    for draw in range(resamples):
        yield [np.asarray(task)[pick[draw]] for task, pick in zip(scores, picks)]


def aggregate_ci(scores: Sequence[np.ndarray], statistic: Callable, resamples: int = 2_000,
                 confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """(point estimate, low, high): `statistic` and its stratified bootstrap interval."""
    draws = stratified_resamples(scores, resamples, seed)
    samples = np.array([statistic(draw) for draw in draws])
    low, high = _interval(samples, confidence)
    return statistic(scores), float(low), float(high)


def profile(scores: Sequence[np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """Performance profile: per threshold τ, the fraction of runs scoring above τ, averaged
    over tasks. thresholds [K] -> [K]."""
    thresholds = np.asarray(thresholds, dtype=float)
    return np.mean([np.mean(np.asarray(task)[:, None] > thresholds[None, :], axis=0)
                    for task in scores], axis=0)


def profile_ci(scores: Sequence[np.ndarray], thresholds: np.ndarray, resamples: int = 2_000,
               confidence: float = CONFIDENCE, seed: int = 0):
    """(profile [K], low [K], high [K]) with stratified bootstrap intervals."""
    samples = np.array([profile(draw, thresholds)
                        for draw in stratified_resamples(scores, resamples, seed)])
    low, high = _interval(samples, confidence)
    return profile(scores, thresholds), low, high
