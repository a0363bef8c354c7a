"""The learning diagnostics the trainer writes into its rows."""

import numpy as np
import pytest

from slacjax.episodes import mean_discounted_return


def test_mean_discounted_return_is_the_average_return_to_go():
    rewards = [0.0, 1.0, 0.0, 4.0, 2.0]
    gamma = 0.9
    to_go = [sum(gamma ** k * r for k, r in enumerate(rewards[t:])) for t in range(5)]
    assert mean_discounted_return(rewards, gamma) == pytest.approx(np.mean(to_go))
    assert mean_discounted_return([], gamma) == 0.0
    # Constant reward r over a long episode: close to r / (1 − γ) at its start.
    assert mean_discounted_return([1.0] * 2000, 0.99) == pytest.approx(100.0, rel=0.05)
