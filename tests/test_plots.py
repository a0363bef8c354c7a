"""Figures and videos of a run: the paper's curve beside the run's, MP4 from the wheel's ffmpeg."""

import warnings

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from slacjax import plots, stats

ROWS = [dict(phase="train", env_step=10), *(
    dict(phase="eval", env_step=step, return_stochastic=step / 1000, return_stochastic_std=2.0,
         return_greedy=step / 2000, return_greedy_std=1.0) for step in (10_000, 20_000, 30_000))]


@pytest.fixture
def legends(monkeypatch):
    """The line labels of every figure saved, by file name."""
    saved = {}
    original = plots.save

    def save(figure, path):
        saved[path.name] = [line.get_label() for axis in figure.axes for line in axis.get_lines()]
        original(figure, path)

    monkeypatch.setattr(plots, "save", save)
    return saved


@pytest.mark.parametrize("task, overlay", [("cheetah_run", True), ("walker_run", False),
                                           (None, False)])
def test_learning_curves_draw_the_paper_curve_where_there_is_one(
        task, overlay, legends, tmp_path):
    plots.learning_curve(ROWS, tmp_path / "one.png", "one seed", task=task)
    plots.seeds_learning_curve([ROWS, ROWS], tmp_path / "seeds.png", "seeds", task=task)
    for name in ("one.png", "seeds.png"):
        assert (tmp_path / name).stat().st_size > 1000
        labels = legends[name]
        assert any(label.startswith("SLAC paper (alexlee-gk/slac@08fb13a)")
                   for label in labels) is overlay
        assert sum(label.startswith(("stochastic", "greedy")) for label in labels) == 2


def test_write_video_writes_an_mp4(tmp_path, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    path = plots.write_video(frames, tmp_path / "episode.mp4", fps=10)
    assert path == tmp_path / "episode.mp4"
    # Reading it back: imageio-ffmpeg's reader would start ffmpeg with a Python pre-exec hook.
    monkeypatch.setenv("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    read = np.stack(list(iio.imiter(path)))
    assert read.shape == (6, 64, 64, 3)  # upscaled 4x


def test_writing_an_mp4_forks_no_python_child_of_this_jax_process(tmp_path):
    """imageio-ffmpeg's default start of ffmpeg runs Python in a forked child, which JAX
    (multithreaded) warns of as a likely deadlock; plots starts it without."""
    jax.devices()  # the backend up, and with it JAX's warning on fork
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plots.write_video(frames, tmp_path / "episode.mp4").suffix == ".mp4"
    assert [str(warning.message) for warning in caught if "fork" in str(warning.message)] == []


def test_write_video_falls_back_to_a_gif_without_an_mp4_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "ffmpeg_executable", lambda: None)
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    path = plots.write_video(frames, tmp_path / "episode.mp4")
    assert path == tmp_path / "episode.gif" and path.stat().st_size > 0
    assert not (tmp_path / "episode.mp4").exists()


# ---------------------------------------------------------------- bands that respect the data

def eval_row(step: int, episodes: list[float] | None, **logged) -> dict:
    """An evaluation row of a catch-or-miss task (returns 0 or 950): with the episodes'
    returns (`episodes`), or, as rows were written before them, only their mean and std."""
    returns = np.asarray(episodes if episodes is not None else logged.pop("like"), float)
    row = dict(phase="eval", env_step=step, return_stochastic=float(returns.mean()),
               return_stochastic_std=float(returns.std()))
    if episodes is not None:
        row["returns_stochastic"] = list(episodes)
    return row


CATCHES = [[0.0] * 10, [0.0] * 7 + [950.0] * 3, [0.0, 950.0] * 5, [950.0] * 10]


def test_a_band_over_episodes_stays_within_the_returns_seen():
    rows = [eval_row(10_000 * (index + 1), episodes) for index, episodes in enumerate(CATCHES)]
    mean, low, high, name = plots.episodes_band(rows, "stochastic", (0.0, 1000.0))
    np.testing.assert_allclose(mean, [0.0, 285.0, 475.0, 950.0])
    assert name == plots.BAND_CI
    assert np.all(low >= 0.0) and np.all(high <= 950.0)  # the episodes' min and max
    assert np.all(low <= mean) and np.all(mean <= high)
    assert (low[0], high[0]) == (0.0, 0.0) and (low[-1], high[-1]) == (950.0, 950.0)
    # 5 catches in 10: the mean's interval, narrower than the episodes' spread
    assert 0.0 < low[2] < 475.0 < high[2] < 950.0


def test_old_rows_mean_and_std_are_clipped_to_the_tasks_known_range():
    """Rows with only the mean and std: 285 ± 435.4 reaches −150 unclipped; a DMC return is
    never below 0 (nor above 1000), a Gymnasium one may be."""
    rows = [eval_row(10_000, None, like=CATCHES[1]), eval_row(20_000, None, like=CATCHES[3])]
    std = np.std(CATCHES[1])
    _, low, high, name = plots.episodes_band(rows, "stochastic",
                                             plots.return_bounds("ball_in_cup_catch"))
    assert name == plots.BAND_STD
    np.testing.assert_allclose(low, [0.0, 950.0])
    np.testing.assert_allclose(high, [285.0 + std, 950.0])
    _, low, _, _ = plots.episodes_band(rows, "stochastic", plots.return_bounds("Hopper-v5"))
    np.testing.assert_allclose(low[0], 285.0 - std)
    mixed = plots.episodes_band([rows[0], eval_row(20_000, CATCHES[2])], "stochastic")
    assert mixed[3] == plots.BAND_MIXED


def test_the_seeds_band_stays_within_the_seeds_returns():
    returns = np.array([[0.0, 950.0, 0.0], [0.0, 950.0, 950.0], [0.0, 950.0, 950.0],
                        [950.0, 950.0, 0.0]])  # [4 seeds, 3 evaluations]
    mean, low, high = plots.seeds_band(returns)
    np.testing.assert_allclose(mean, returns.mean(axis=0))
    assert np.all(low >= returns.min(axis=0)) and np.all(high <= returns.max(axis=0))
    assert np.all(low <= mean) and np.all(mean <= high)
    assert (low[1], high[1]) == (950.0, 950.0)


def test_a_bootstrap_interval_never_leaves_the_values_range():
    # The mean of seven 0.1s is 0.09999999999999999 in floating point: below the data.
    assert np.mean([0.1] * 7) < 0.1
    low, high = stats.bootstrap_mean_ci(np.full(7, 0.1))
    assert low == high == 0.1


def test_the_learning_curve_names_its_band(legends, tmp_path):
    rows = [eval_row(10_000 * (index + 1), episodes) for index, episodes in enumerate(CATCHES)]
    for row in rows:
        row.update(return_greedy=row["return_stochastic"], return_greedy_std=0.0)
    plots.learning_curve(rows, tmp_path / "one.png", "catch", task="ball_in_cup_catch")
    labels = legends["one.png"]
    assert "stochastic (mean over episodes, 95% bootstrap CI)" in labels
    assert "greedy (mean over episodes, ± std)" in labels


# ------------------------------------------------------------------------ training diagnostics

def train_row(step: int, **logged) -> dict:
    return dict(phase="train", env_step=step, **logged)


FULL_TRAIN = [train_row(step, entropy=1.3 - step / 1e5, entropy_uniform=2 * np.log(2),
                        alpha=0.1 * np.exp(-step / 3e4), q_mean=step / 1e4,
                        discounted_return=step / 1.2e4, reward_mse=1 / step,
                        latent_grad_norm=50 + step / 1e3, kl=8.0)
              for step in range(11_000, 51_000, 1_000)]


def test_diagnostics_draws_each_logged_key_and_the_uniform_policys_entropy(legends, tmp_path):
    rows = [dict(phase="collect", env_step=1_000), *FULL_TRAIN, eval_row(50_000, [0.0, 950.0])]
    plots.diagnostics(rows, tmp_path / "diagnostics.png", "catch, seed 0")
    assert (tmp_path / "diagnostics.png").stat().st_size > 1000
    assert legends["diagnostics.png"] == [
        "entropy of π (batch mean)", "uniform policy (A·ln 2)", "α", "Q (batch mean)",
        "observed discounted return", "reward MSE", "‖∇ ELBO loss‖",
        "KL(posterior ‖ prior)"]
    assert plots.uniform_entropy(rows) == pytest.approx(2 * np.log(2))


def test_diagnostics_of_older_rows_draws_what_they_have(legends, tmp_path):
    """Rows from before the trainer logged the uniform entropy, the observed return and the
    reward error (or with a null value): those lines are left out, the picture still written."""
    rows = [train_row(step, entropy=1.2, alpha=0.05, q_mean=None if step == 12_000 else 3.0)
            for step in (11_000, 12_000, 13_000)]
    plots.diagnostics(rows, tmp_path / "old.png", "old run")
    assert legends["old.png"] == ["entropy of π (batch mean)", "α", "Q (batch mean)"]
    np.testing.assert_array_equal(plots.train_series(rows, "q_mean")[0], [11_000, 13_000])
    assert plots.uniform_entropy(rows) is None
    plots.diagnostics([], tmp_path / "empty.png", "no training yet")
    assert legends["empty.png"] == [] and (tmp_path / "empty.png").stat().st_size > 1000
