"""Pictures of a run: the learning curve (beside the SLAC paper's), the training diagnostics
(entropy, α, Q, reward error) and the paper's reconstruction / imagination figure.

Files are written whole or not at all (`slacjax.durable`): to a temporary name, then renamed,
so a viewer never sees half a picture or video; a failed write is a WriteError, one line.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

import matplotlib

matplotlib.use("Agg")  # files only, no display

import imageio.v3 as iio  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from slacjax import durable, reference, stats, tasks  # noqa: E402

STRIP_ROWS = ("ground truth", "posterior", "prior (imagined)")
POLICIES = ("stochastic", "greedy")
# What a learning curve's band is, in its legend.
BAND_CI = "95% bootstrap CI"
BAND_STD = "± std"
BAND_MIXED = "95% bootstrap CI; ± std where episode returns were not logged"


def steps_label(step: float) -> str:
    """An env-step count for an axis or a table: 100000 -> "100k", 1500000 -> "1.5M"."""
    if step >= 1_000_000:
        return f"{step / 1e6:g}M"
    return f"{step / 1e3:g}k" if step >= 1_000 else f"{step:g}"


def env_step_axis(axis) -> None:
    axis.set_xlabel("env steps")
    axis.xaxis.set_major_formatter(lambda step, _: steps_label(step))


def save(figure, path: pathlib.Path) -> None:
    """Writes `figure` to `path` (PNG) whole or not at all (WriteError), and closes it."""
    try:
        with durable.replacing(path) as temporary:
            figure.savefig(temporary, format="png")
    finally:
        plt.close(figure)


def draw_reference(axis, task: str | None, last_env_step: float, band: str = "std") -> bool:
    """The paper's curve of `task` up to `last_env_step` on `axis`: its mean and a band of
    ± one standard deviation across its seeds within their [min, max] (`band="std"`) or its
    95% bootstrap interval (`band="ci"`). -> whether there was one to draw."""
    curve = reference.curve(task) if task else None
    if curve is None or last_env_step <= curve.env_step[0]:
        return False
    # The logged steps before the run's last one, and the curve interpolated at that one.
    shown = curve.env_step < last_env_step
    steps = np.append(curve.env_step[shown], min(last_env_step, curve.env_step[-1]))
    if band == "std":
        low, high = stats.within(curve.mean - curve.std, curve.mean + curve.std, curve.min,
                                 curve.max)
        spread = "± std"
    else:
        low, high = curve.ci_low, curve.ci_high
        spread = "95% CI"
    mean, low, high = (np.interp(steps, curve.env_step, values)
                       for values in (curve.mean, low, high))
    seeds = int(np.max(curve.n_seeds))
    axis.plot(steps, mean, color="0.25", linestyle="--", linewidth=1.5,
              label=f"{curve.label}, {seeds} seeds, {spread}", zorder=1)
    axis.fill_between(steps, low, high, color="0.5", alpha=0.2, linewidth=0, zorder=0)
    return True


def return_bounds(task: str | None) -> tuple[float, float]:
    """Where `task`'s episode returns are known to lie (nowhere in particular without one)."""
    return tasks.get_task(task).return_range if task else (-np.inf, np.inf)


def episodes_band(evals: list[dict], policy: str,
                  bounds: tuple[float, float] = (-np.inf, np.inf)):
    """`policy`'s return at each evaluation row and the band around it: the 95% bootstrap
    interval of the mean over the row's episodes (`returns_<policy>`), within their observed
    [min, max]; for a row that logged only the mean and std (rows written before the episodes'
    returns were), mean ± std clipped to `bounds` (the task's known range).

    evals: S rows -> (mean [S], low [S], high [S], the band's name for a legend).
    """
    means = np.array([row[f"return_{policy}"] for row in evals], dtype=float)
    low, high = np.empty_like(means), np.empty_like(means)
    kinds = set()
    for index, row in enumerate(evals):
        episodes = row.get(f"returns_{policy}")
        if episodes:
            low[index], high[index] = stats.bootstrap_mean_ci(np.asarray(episodes, float))
            kinds.add(BAND_CI)
        else:
            low[index], high[index] = stats.std_band(means[index], row[f"return_{policy}_std"],
                                                     *bounds)
            kinds.add(BAND_STD)
    name = BAND_MIXED if len(kinds) > 1 else next(iter(kinds), BAND_CI)
    return means, low, high, name


def seeds_band(returns: np.ndarray):
    """returns [seeds, S] (each seed's mean return per evaluation) -> (mean [S], low [S],
    high [S]): the 95% bootstrap interval of the mean across seeds, within the seeds'
    [min, max]."""
    returns = np.asarray(returns, dtype=float)
    low, high = stats.bootstrap_mean_ci(returns)
    return returns.mean(axis=0), low, high


def _curves(series: dict, path: pathlib.Path, title: str, task: str | None) -> None:
    """{label: (env steps [S], mean [S], low [S], high [S])} as lines with bands beside the
    paper's curve of `task`, written to `path`."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    last = max((max(steps) for steps, *_ in series.values() if len(steps)), default=0)
    draw_reference(axis, task, last)
    for label, (steps, mean, low, high) in series.items():
        axis.plot(steps, mean, marker="o", markersize=3, label=label, zorder=3)
        axis.fill_between(steps, low, high, alpha=0.2, zorder=2)
    env_step_axis(axis)
    axis.set_ylabel("episode return")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    save(figure, path)


def learning_curve(rows: list[dict], path: pathlib.Path, title: str,
                   task: str | None = None) -> None:
    """Evaluation returns (stochastic and greedy: the mean over the episodes with the 95%
    bootstrap interval of that mean, see `episodes_band`) against env steps, from the logged
    rows, beside the SLAC paper's curve of `task` (mean ± std over its seeds) where the
    package has one."""
    evals = [row for row in rows if row.get("phase") == "eval"]
    steps = [row["env_step"] for row in evals]
    series = {}
    for policy in POLICIES:
        mean, low, high, band = episodes_band(evals, policy, return_bounds(task))
        series[f"{policy} (mean over episodes, {band})"] = (steps, mean, low, high)
    _curves(series, path, title, task)


def seeds_learning_curve(rows_per_seed: list[list[dict]], path: pathlib.Path,
                         title: str, task: str | None = None) -> None:
    """The seeds' evaluation returns, their mean with its 95% bootstrap interval across seeds
    (`seeds_band`), at the env steps where every seed has an evaluation (each seed's return is
    its mean over its evaluation episodes), beside the SLAC paper's curve of `task` where the
    package has one."""
    evals = [{row["env_step"]: row for row in rows if row.get("phase") == "eval"}
             for rows in rows_per_seed]
    steps = sorted(set.intersection(*(set(seed_evals) for seed_evals in evals)))
    series = {}
    for policy in POLICIES:
        returns = np.array([[seed_evals[step][f"return_{policy}"] for step in steps]
                            for seed_evals in evals], dtype=float).reshape(len(evals), -1)
        series[f"{policy} (mean over seeds, {BAND_CI})"] = (steps, *seeds_band(returns))
    _curves(series, path, title, task)


# The diagnostics figure's panels: (title, y label, {train-row key: line label}).
DIAGNOSTICS = (
    ("policy entropy", "nats", {"entropy": "entropy of π (batch mean)"}),
    ("temperature α", "α", {"alpha": "α"}),
    ("critic against the observed return", "discounted return",
     {"q_mean": "Q (batch mean)", "discounted_return": "observed discounted return"}),
    ("reward head error", "MSE", {"reward_mse": "reward MSE"}),
    ("latent model's gradient", "global norm", {"latent_grad_norm": "‖∇ ELBO loss‖"}),
    ("latent KL", "nats", {"kl": "KL(posterior ‖ prior)"}),
)
# Keys that move by orders of magnitude (α anneals; a diverging model's terms explode): on a
# linear axis their later course would be flat.
LOG_SCALE_KEYS = ("alpha", "reward_mse", "latent_grad_norm", "kl")


def train_series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """`key` against env steps over the train rows that logged it -> (steps [N], values [N])
    (N = 0 where none did: rows from before the trainer logged it)."""
    logged = [row for row in rows if row.get("phase") == "train" and row.get(key) is not None]
    return (np.array([row["env_step"] for row in logged], dtype=float),
            np.array([row[key] for row in logged], dtype=float))


def uniform_entropy(rows: list[dict]) -> float | None:
    """The uniform policy's entropy (A·ln 2 over [−1, 1]^A) as the trainer logged it, the
    most a squashed policy's can be; None where no row says (the action count A is unknown
    here)."""
    values = train_series(rows, "entropy_uniform")[1]
    return float(values[-1]) if values.size else None


def _diagnostic_panel(axis, rows: list[dict], title: str, unit: str, lines: dict) -> None:
    """One panel of `diagnostics`: its keys' lines, or a note that the rows have none."""
    drawn = {}
    for key, label in lines.items():
        steps, values = train_series(rows, key)
        if steps.size:
            axis.plot(steps, values, linewidth=1.2, label=label)
            drawn[key] = values
    if not drawn:
        axis.text(0.5, 0.5, f"not logged ({', '.join(lines)})", transform=axis.transAxes,
                  ha="center", va="center", color="0.4", fontsize=9)
        axis.set_yticks([])
    if any(key in drawn and np.all(drawn[key] > 0) for key in LOG_SCALE_KEYS):
        axis.set_yscale("log")
        for ticks in (axis.yaxis.set_major_formatter, axis.yaxis.set_minor_formatter):
            ticks(lambda value, _: f"{value:g}")  # 0.06, not 6×10⁻²
    axis.set_title(title, fontsize=10)
    axis.set_ylabel(unit)
    axis.grid(alpha=0.3)


def diagnostics(rows: list[dict], path: pathlib.Path, title: str) -> None:
    """The training diagnostics of the logged rows (phase "train") against env steps, a 2×3
    grid written to `path`: the policy's entropy beside the uniform policy's (where the rows
    give it), the temperature α, the critic's Q beside the observed discounted return, the
    reward head's error, the latent model's gradient norm and its KL. A panel whose keys no
    row has says so (older runs)."""
    figure, axes = plt.subplots(2, 3, figsize=(13.2, 6.4), dpi=100, sharex=True)
    for axis, (panel, unit, lines) in zip(axes.flat, DIAGNOSTICS):
        _diagnostic_panel(axis, rows, panel, unit, lines)
    ceiling = uniform_entropy(rows)
    if ceiling is not None:
        axes[0, 0].axhline(ceiling, color="0.3", linestyle="--", linewidth=1,
                           label="uniform policy (A·ln 2)")
    for axis in axes.flat:
        if axis.get_lines():
            axis.legend(fontsize=8)
    for axis in axes[1]:
        env_step_axis(axis)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    save(figure, path)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def strip_rows(truth: np.ndarray, posterior: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """One sequence as three rows of frames [3, T, H, W, 3] uint8: truth, posterior, prior."""
    return np.stack([_to_uint8(truth), _to_uint8(posterior), _to_uint8(prior)])


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=-3).repeat(factor, axis=-2)


def _grid(rows: np.ndarray, gap: int) -> np.ndarray:
    """[R, T, H, W, 3] uint8 -> one image [R·(H+gap)−gap, T·(W+gap)−gap, 3], white gaps."""
    num_rows, steps, height, width = rows.shape[:4]
    grid = np.full((num_rows * (height + gap) - gap, steps * (width + gap) - gap, 3), 255,
                   np.uint8)
    for row in range(num_rows):
        for step in range(steps):
            top, left = row * (height + gap), step * (width + gap)
            grid[top:top + height, left:left + width] = rows[row, step]
    return grid


def reconstruction_strip(rows: np.ndarray, png_path: pathlib.Path, gif_path: pathlib.Path,
                         title: str) -> None:
    """`rows` [3, T, H, W, 3] from `strip_rows` -> a labelled PNG grid and a GIF.

    The GIF shows, per time step, the three images side by side (truth | posterior | prior).
    """
    num_rows, steps, height, width = rows.shape[:4]
    gap = max(height // 16, 1)
    # One image on one axes: a subplot per frame costs a second per picture in layout alone.
    figure = plt.figure(figsize=(1.1 * steps + 1.2, 1.15 * num_rows + 0.5), dpi=100)
    axis = figure.add_axes((1.2 / (1.1 * steps + 1.2), 0.02, 1 - 1.25 / (1.1 * steps + 1.2),
                            1 - 0.75 / (1.15 * num_rows + 0.5)))
    axis.imshow(_grid(rows, gap), interpolation="nearest")
    axis.set_xticks([step * (width + gap) + width / 2 for step in range(steps)],
                    [f"t={step}" for step in range(steps)], fontsize=8)
    axis.set_yticks([row * (height + gap) + height / 2 for row in range(num_rows)],
                    STRIP_ROWS[:num_rows], fontsize=8)
    axis.tick_params(length=0, top=True, labeltop=True, bottom=False, labelbottom=False)
    for side in axis.spines.values():
        side.set_visible(False)
    figure.suptitle(title, fontsize=9)
    save(figure, png_path)

    side_by_side = np.concatenate(list(rows), axis=-2)  # [T, H, 3W, 3]
    write_gif(_upscale(side_by_side, 2), gif_path)


def write_gif(frames: np.ndarray, path: pathlib.Path, fps: int = 4) -> None:
    """frames [T, H, W, 3] uint8 as a looping GIF at `path`, whole or not at all."""
    with durable.replacing(path) as temporary:
        iio.imwrite(temporary, frames, extension=".gif", duration=1000 / fps, loop=0)


def ffmpeg_executable() -> str | None:
    """The ffmpeg binary the `imageio-ffmpeg` wheel bundles (or the one it finds), or None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def encode_mp4(ffmpeg: str, frames: np.ndarray, path: pathlib.Path, fps: int) -> str | None:
    """frames [T, H, W, 3] uint8 (H, W even) as an H.264 MP4 at `path` (any name: the format
    is given) -> None, or why ffmpeg failed (a full disk, say): its exit status and its last
    message.

    ffmpeg starts without a `preexec_fn`, i.e. by vfork + exec with no Python in the child
    (JAX's threads make a fork with Python in it unsafe, and JAX warns of one), in a session
    of its own: a Ctrl-C reaches this process only, which stops ffmpeg (subprocess.run kills
    it on the way out) and loses only the temporary file."""
    height, width = frames.shape[1:3]
    command = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(fps), "-i", "-", "-an",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4", str(path)]
    result = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                            start_new_session=True)
    if result.returncode == 0:
        return None
    said = result.stderr.decode(errors="replace").strip().splitlines()
    # "[out#0/mp4 @ 0x…] Error closing file: No space left on device": the part after the tag
    last = re.sub(r"^\[[^\]]*\]\s*", "", said[-1]).replace(str(path), "the file") if said else ""
    return f"ffmpeg exited with status {result.returncode}" + (f": {last}" if last else "")


def write_video(frames: np.ndarray, path: pathlib.Path, fps: int = 30) -> pathlib.Path:
    """An MP4 (through the ffmpeg binary the `imageio-ffmpeg` wheel bundles) -> the path
    written, whole or not at all (WriteError). Where there is no ffmpeg, a GIF next to it."""
    frames = _upscale(_to_uint8(frames), 4)
    ffmpeg = ffmpeg_executable()
    if ffmpeg is None:  # a GIF needs only pillow
        gif_path = pathlib.Path(path).with_suffix(".gif")
        write_gif(frames, gif_path, fps=fps)
        return gif_path
    mp4_path = pathlib.Path(path).with_suffix(".mp4")
    with durable.replacing(mp4_path) as temporary:
        failure = encode_mp4(ffmpeg, frames, temporary, fps)
        if failure is not None:
            raise durable.write_error(mp4_path, failure)
    return mp4_path
