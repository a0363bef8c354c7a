"""Figures and videos of a run: the paper's curve beside the run's, MP4 from the wheel's ffmpeg."""

import imageio.v3 as iio
import numpy as np
import pytest

from slacjax import plots

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


def test_write_video_writes_an_mp4(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    path = plots.write_video(frames, tmp_path / "episode.mp4", fps=10)
    assert path == tmp_path / "episode.mp4"
    read = np.stack(list(iio.imiter(path)))
    assert read.shape == (6, 64, 64, 3)  # upscaled 4x


def test_write_video_falls_back_to_a_gif_without_an_mp4_writer(tmp_path, monkeypatch):
    def no_mp4(path, frames, extension, **kwargs):
        if extension == ".mp4":
            raise OSError("Could not find a backend")
        return write(path, frames, extension=extension, **kwargs)

    write = iio.imwrite
    monkeypatch.setattr(plots.iio, "imwrite", no_mp4)
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    path = plots.write_video(frames, tmp_path / "episode.mp4")
    assert path == tmp_path / "episode.gif" and path.stat().st_size > 0
    assert not (tmp_path / "episode.mp4").exists()
