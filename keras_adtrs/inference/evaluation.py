"""Evaluation: the IQA metrics with bootstrap intervals, a scatter plot, scoring a data set.

`keras_adtrs.metrics.evaluate_predictions` gives SRCC, PLCC (raw), PLCC after the 4-parameter
logistic fit, KRCC and RMSE, each with a seeded percentile bootstrap 95%
interval over resampled (prediction, label) pairs. `evaluate_model` scores an
`IQASource`'s images with `keras_adtrs.score`. `scatter_plot` draws
prediction against human score with the fitted logistic curve.
"""

import math
import warnings

import numpy as np

from keras_adtrs import metrics as iqa_metrics
from keras_adtrs.defaults import BOOTSTRAP_RESAMPLES, SCORE_BATCH_SIZE, TEST_CROPS
from keras_adtrs.metrics import METRIC_LABELS, evaluate_predictions
from keras_adtrs.models.scoring import score

def format_metrics_table(result):
    """The metrics of `evaluate_predictions` as an aligned text table."""
    pct = int(round(100 * result.get("confidence", 0.95)))
    lines = [f"{'metric':<16} {'value':>8}   {pct}% bootstrap interval", "-" * 50]
    for name, label in METRIC_LABELS.items():
        entry = result[name]
        value = entry["value"]
        shown = "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"
        low, high = entry["ci_low"], entry["ci_high"]
        if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
            interval = "-"
        else:
            interval = f"[{low:.4f}, {high:.4f}]"
        lines.append(f"{label:<16} {shown:>8}   {interval}")
    lines.append(f"{'items':<16} {result['num_items']:>8}")
    return "\n".join(lines)


def scatter_plot(predictions, labels, path, title_metrics=None, title=None, xlabel="prediction", ylabel="human score"):
    """Saves a scatter plot of predictions against human scores with the logistic fit.

    Draws on matplotlib's Agg canvas (no display needed; pyplot untouched).

    Args:
        predictions: array-like `(N,)`.
        labels: array-like `(N,)`.
        path: str. Output image path (PNG by its extension).
        title_metrics: dict or None. `evaluate_predictions` output, or a
            plain `{name: value}` dict; SRCC, PLCC and the others found in it
            are printed in the title. Defaults to `None` (computed here,
            without intervals).
        title: str or None. First title line (for instance the data set).
        xlabel, ylabel: str. Axis labels.

    Returns:
        The `path` written.

    Example:
    >>> scatter_plot(predictions, labels, "scatter.png", evaluate_predictions(predictions, labels))  # doctest: +SKIP
    """
    # The Agg canvas directly: no pyplot, no global backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p, y = iqa_metrics._pair(predictions, labels)
    if title_metrics is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            title_metrics = evaluate_predictions(p, y, bootstrap=0)
    parts = []
    for name, label in METRIC_LABELS.items():
        if name not in title_metrics:
            continue
        value = title_metrics[name]
        value = value.get("value") if isinstance(value, dict) else value
        parts.append(f"{label} " + ("nan" if value is None or not math.isfinite(value) else f"{value:.3f}"))
    figure = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.scatter(p, y, s=12, alpha=0.6, edgecolors="none", label=f"images (n={p.size})")
    if p.size >= 4 and np.ptp(p) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = iqa_metrics.fit_logistic(p, y)
        grid = np.linspace(p.min(), p.max(), 200)
        axes.plot(grid, iqa_metrics.logistic4(grid, *params), color="C3", linewidth=2, label="4-parameter logistic fit")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    lines = [title] if title else []
    if parts:
        half = (len(parts) + 1) // 2
        lines += [", ".join(parts[:half]), ", ".join(parts[half:])]
    axes.set_title("\n".join(line for line in lines if line), fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    return path


def evaluate_model(
    model,
    source,
    indices=None,
    crops=TEST_CROPS,
    crop_mode="grid",
    seed=0,
    batch_size=SCORE_BATCH_SIZE,
    bootstrap=BOOTSTRAP_RESAMPLES,
    progress=False,
):
    """Scores a data set's images and evaluates them against its human scores.

    Args:
        model: an `ADTRSModel` (see `keras_adtrs.score`).
        source: an `IQASource` (`keras_adtrs.data.source.load_source`).
        indices: array of int or None. Indices into `source` to evaluate
            (for instance `split.test`); defaults to every image.
        crops: int. Crops per image. Defaults to `9`.
        crop_mode: str. `"grid"` (the deterministic test grid) or `"random"`
            (random crops seeded by `seed` and each image's index in
            `source`: the same seed gives the same numbers). Defaults to
            `"grid"`.
        seed: int. Seed of the random crops and of the bootstrap. Defaults
            to `0`.
        batch_size: int. Crops per forward call. Defaults to `32`.
        bootstrap: int. Bootstrap resamples for the intervals. Defaults to
            `1000`.
        progress: bool. Show a progress bar on stderr. Defaults to `False`.

    Returns:
        dict: the `evaluate_predictions` entries plus `dataset`, `crops`,
        `crop_mode`, `predictions` (list of float), `labels` (list of
        float), `names` (list of str) and `indices` (list of int).

    Example:
    >>> source = load_source("default")  # doctest: +SKIP
    >>> split = split_by_group(source.groups, seed=0)  # doctest: +SKIP
    >>> result = evaluate_model(model, source, split.test, crops=9)  # doctest: +SKIP
    >>> result["srcc"]["value"]  # doctest: +SKIP
    """
    if crop_mode not in ("grid", "random"):
        raise ValueError(f"crop_mode must be 'grid' or 'random', got {crop_mode!r}")
    indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError(f"nothing to evaluate: no images selected from {source.name!r}")
    images = [source.images[i] for i in indices]
    predictions = score(
        model,
        images,
        crops=crops,
        batch_size=batch_size,
        crop_mode=crop_mode,
        seed=seed,
        keys=indices.tolist(),
        progress=progress,
    )
    labels = source.scores[indices]
    result = {"dataset": source.name, "crops": int(crops), "crop_mode": crop_mode}
    result.update(evaluate_predictions(predictions, labels, bootstrap=bootstrap, seed=seed))
    result["predictions"] = [float(v) for v in predictions]
    result["labels"] = [float(v) for v in labels]
    result["names"] = [source.names[i] for i in indices]
    result["indices"] = indices.tolist()
    return result
