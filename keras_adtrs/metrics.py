"""Correlation and error metrics of the IQA field, on numpy arrays.

`srcc`, `plcc`, `krcc` and `rmse` equal scipy's; `plcc_logistic` is the
Pearson correlation after the 4-parameter logistic fit of VQEG.
`evaluate_predictions` gives all five with seeded percentile bootstrap
intervals (what `evaluate`, the K-fold protocol and the baselines report). Undefined
correlations (constant input, fewer than 2 items) give NaN with a warning,
never an exception.
"""

import math
import warnings

import numpy as np
from scipy import optimize, stats


class UndefinedMetricWarning(UserWarning):
    """A correlation is undefined for these inputs (constant or too short)."""


def _pair(predictions, labels):
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(
            f"predictions and labels differ in length: {p.shape[0]} vs {y.shape[0]}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        raise ValueError("predictions and labels must be finite (found NaN or inf)")
    return p, y


def _undefined(name, p, y):
    if p.size < 2:
        warnings.warn(f"{name} is undefined for {p.size} item(s): returning NaN", UndefinedMetricWarning, stacklevel=3)
        return True
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        which = "predictions" if np.ptp(p) == 0 else "labels"
        warnings.warn(f"{name} is undefined: constant {which}; returning NaN", UndefinedMetricWarning, stacklevel=3)
        return True
    return False


def srcc(predictions, labels):
    """Spearman rank-order correlation (scipy.stats.spearmanr)."""
    p, y = _pair(predictions, labels)
    if _undefined("SRCC", p, y):
        return float("nan")
    return float(stats.spearmanr(p, y).statistic)


def plcc(predictions, labels):
    """Pearson linear correlation on raw predictions (scipy.stats.pearsonr)."""
    p, y = _pair(predictions, labels)
    if _undefined("PLCC", p, y):
        return float("nan")
    return float(stats.pearsonr(p, y).statistic)


def krcc(predictions, labels):
    """Kendall rank-order correlation, tau-b (scipy.stats.kendalltau)."""
    p, y = _pair(predictions, labels)
    if _undefined("KRCC", p, y):
        return float("nan")
    return float(stats.kendalltau(p, y).statistic)


def rmse(predictions, labels):
    """Root mean squared error in label units."""
    p, y = _pair(predictions, labels)
    if p.size == 0:
        warnings.warn("RMSE of 0 items: returning NaN", UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    return float(np.sqrt(np.mean((p - y) ** 2)))


def logistic4(x, b1, b2, b3, b4):
    """`b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))`."""
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -500, 500)
    return b2 + (b1 - b2) / (1.0 + np.exp(z))


def _logistic4_jacobian(x, b1, b2, b3, b4):
    """Partial derivatives of `logistic4` in `(b1, b2, b3, b4)`, shape `(N, 4)`."""
    scale = np.abs(b4) + 1e-12
    z = np.clip(-(x - b3) / scale, -500, 500)
    s = 1.0 / (1.0 + np.exp(z))
    slope = (b1 - b2) * s * (1.0 - s)  # d f / d(-z)
    sign = 1.0 if b4 >= 0 else -1.0
    return np.stack([s, 1.0 - s, -slope / scale, -slope * (x - b3) * sign / scale**2], axis=-1)


def fit_logistic(predictions, labels):
    """Least-squares fit of `logistic4` mapping predictions to labels.

    Returns the parameters `(b1, b2, b3, b4)`; falls back to the start
    point, with a warning, when the fit does not converge.
    """
    p, y = _pair(predictions, labels)
    start = [np.max(y), np.min(y), np.mean(p), np.std(p) / 4.0 + 1e-6]
    try:
        # Analytic Jacobian: finite differences stall a parameter whose start is ~0
        # (MINPACK steps relative to |value|), e.g. b3 when predictions are centred.
        params, _ = optimize.curve_fit(logistic4, p, y, p0=start, jac=_logistic4_jacobian, maxfev=20000)
    except (RuntimeError, TypeError, ValueError, optimize.OptimizeWarning) as exc:  # TypeError: < 4 items
        warnings.warn(f"logistic fit did not converge ({exc}); using its start point", UndefinedMetricWarning, stacklevel=2)
        params = np.array(start)
    return tuple(float(v) for v in params)


def plcc_logistic(predictions, labels):
    """Pearson correlation after the 4-parameter logistic fit (VQEG)."""
    p, y = _pair(predictions, labels)
    if _undefined("PLCC (logistic)", p, y):
        return float("nan")
    if p.size < 4:
        warnings.warn(
            f"PLCC (logistic) is undefined for {p.size} items: the 4-parameter fit needs at least 4; returning NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        fitted = logistic4(p, *fit_logistic(p, y))
    if np.ptp(fitted) == 0:
        warnings.warn("PLCC (logistic) is undefined: the fit is constant; returning NaN", UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    return float(stats.pearsonr(fitted, y).statistic)


METRICS = {"srcc": srcc, "plcc": plcc, "plcc_logistic": plcc_logistic, "krcc": krcc, "rmse": rmse}


def all_metrics(predictions, labels, names=("srcc", "plcc", "plcc_logistic", "krcc", "rmse")):
    """Dict of the named metrics (default: all five)."""
    return {name: METRICS[name](predictions, labels) for name in names}


def bootstrap_interval(metric, predictions, labels, num_resamples=1000, seed=0, confidence=0.95):
    """Percentile bootstrap interval of a metric, resampling (prediction, label) pairs.

    Resamples on which the metric is undefined (for instance all-equal
    labels) are left out; when fewer than half are defined the interval is
    `(nan, nan)`. Warnings raised inside the resamples are silenced.

    Args:
        metric: callable `(predictions, labels) -> float` or a name of
            `METRICS` (`"srcc"`, `"plcc"`, `"plcc_logistic"`, `"krcc"`,
            `"rmse"`).
        predictions: array-like `(N,)`.
        labels: array-like `(N,)`.
        num_resamples: int. Bootstrap resamples. Defaults to `1000`.
        seed: int. Seed of `numpy.random.Generator(PCG64(seed))`; the same
            seed gives the same interval. Defaults to `0`.
        confidence: float. Interval coverage. Defaults to `0.95`.

    Returns:
        `(low, high)` floats.

    Example:
    >>> low, high = bootstrap_interval("srcc", predictions, labels, seed=0)  # doctest: +SKIP
    """
    values = bootstrap_values(metric, predictions, labels, num_resamples, seed)
    return percentile_interval(values, confidence)


def bootstrap_values(metric, predictions, labels, num_resamples=1000, seed=0):
    """The metric on each of `num_resamples` seeded pair resamples (NaN where undefined)."""
    metric = METRICS[metric] if isinstance(metric, str) else metric
    p, y = _pair(predictions, labels)
    if p.size < 2 or num_resamples < 1:
        return np.full(max(int(num_resamples), 0), np.nan)
    rng = np.random.Generator(np.random.PCG64(seed))
    index = rng.integers(0, p.size, size=(int(num_resamples), p.size))
    values = np.empty(len(index))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, rows in enumerate(index):
            values[k] = metric(p[rows], y[rows])
    return values


def percentile_interval(values, confidence=0.95):
    """`(low, high)` percentiles of the defined bootstrap values; NaN when under half are defined."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.size < 0.5 * values.size:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


#: Metric names in report order, with their display labels.
METRIC_LABELS = {
    "srcc": "SRCC",
    "plcc": "PLCC",
    "plcc_logistic": "PLCC (logistic)",
    "krcc": "KRCC",
    "rmse": "RMSE",
}


def evaluate_predictions(predictions, labels, bootstrap=1000, seed=0, confidence=0.95):
    """The five IQA metrics with seeded percentile bootstrap intervals.

    Undefined metrics (constant predictions or labels, fewer than 2 items)
    are NaN, with an `UndefinedMetricWarning`, never an exception.

    Args:
        predictions: array-like `(N,)` of model scores.
        labels: array-like `(N,)` of human scores (MOS/DMOS).
        bootstrap: int. Bootstrap resamples; `0` skips the intervals (they
            are then NaN). Defaults to `1000`.
        seed: int. Bootstrap seed; the same seed gives the same intervals.
            Defaults to `0`.
        confidence: float. Interval coverage. Defaults to `0.95`.

    Returns:
        dict with `num_items`, `bootstrap`, `seed`, `confidence`, one entry
        per metric (`srcc`, `plcc`, `plcc_logistic`, `krcc`, `rmse`), each
        `{"value": float, "ci_low": float, "ci_high": float}`, and `logistic`,
        the fitted parameters `[b1, b2, b3, b4]` (None when undefined).
        NaN values are kept as float NaN (`keras_adtrs.reporting.to_json` turns them into None).

    Example:
    >>> result = evaluate_predictions([1.0, 2.0, 3.5, 3.0], [10, 25, 40, 30], bootstrap=200)
    >>> round(result["srcc"]["value"], 3)
    1.0
    """
    p, y = _pair(predictions, labels)
    result = {"num_items": int(p.size), "bootstrap": int(bootstrap), "seed": int(seed), "confidence": float(confidence)}
    for name in METRIC_LABELS:
        value = METRICS[name](p, y)
        low = high = float("nan")
        if bootstrap and math.isfinite(value):
            low, high = bootstrap_interval(name, p, y, num_resamples=bootstrap, seed=seed, confidence=confidence)
        result[name] = {"value": float(value), "ci_low": low, "ci_high": high}
    result["logistic"] = None
    if p.size >= 4 and np.ptp(p) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["logistic"] = list(fit_logistic(p, y))
    return result
