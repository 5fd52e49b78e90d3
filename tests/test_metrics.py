"""The IQA metrics against scipy, their edge cases, and the bootstrap intervals."""

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from keras_adtrs import metrics
from keras_adtrs.inference.evaluation import evaluate_predictions, format_metrics_table
from keras_adtrs.metrics import UndefinedMetricWarning
from keras_adtrs.reporting import to_json


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 100, 60)
    predictions = 3.0 / (1.0 + np.exp(-(labels - 50) / 15)) + rng.normal(0, 0.2, 60)
    return predictions, labels


def test_matches_scipy_on_random_data(data):
    p, y = data
    assert metrics.srcc(p, y) == pytest.approx(stats.spearmanr(p, y).statistic, abs=1e-12)
    assert metrics.plcc(p, y) == pytest.approx(stats.pearsonr(p, y).statistic, abs=1e-12)
    assert metrics.krcc(p, y) == pytest.approx(stats.kendalltau(p, y).statistic, abs=1e-12)
    assert metrics.rmse(p, y) == pytest.approx(np.sqrt(np.mean((p - y) ** 2)), abs=1e-12)


def test_plcc_logistic_is_pearson_of_the_fit(data):
    p, y = data
    fitted = metrics.logistic4(p, *metrics.fit_logistic(p, y))
    assert metrics.plcc_logistic(p, y) == pytest.approx(stats.pearsonr(fitted, y).statistic, abs=1e-9)
    # The logistic fit undoes a monotone non-linearity: it beats the raw PLCC here.
    assert metrics.plcc_logistic(p, y) > metrics.plcc(p, y)


def test_logistic_fit_recovers_a_logistic():
    x = np.linspace(-3, 3, 50)
    y = metrics.logistic4(x, 90.0, 10.0, 0.5, 0.7)
    assert metrics.plcc_logistic(x, y) == pytest.approx(1.0, abs=1e-6)


def test_ties_match_scipy():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 5, 40).astype(float)
    y = rng.integers(0, 4, 40).astype(float)
    assert metrics.srcc(p, y) == pytest.approx(stats.spearmanr(p, y).statistic, abs=1e-12)
    assert metrics.krcc(p, y) == pytest.approx(stats.kendalltau(p, y).statistic, abs=1e-12)
    assert metrics.plcc(p, y) == pytest.approx(stats.pearsonr(p, y).statistic, abs=1e-12)


@pytest.mark.parametrize("name", ["srcc", "plcc", "plcc_logistic", "krcc"])
def test_constant_predictions_give_nan_with_a_warning(name):
    with pytest.warns(UndefinedMetricWarning, match="constant predictions"):
        value = metrics.METRICS[name](np.full(10, 2.0), np.arange(10.0))
    assert math.isnan(value)
    with pytest.warns(UndefinedMetricWarning, match="constant labels"):
        assert math.isnan(metrics.METRICS[name](np.arange(10.0), np.full(10, 2.0)))


@pytest.mark.parametrize("name", ["srcc", "plcc", "plcc_logistic", "krcc"])
@pytest.mark.parametrize("size", [0, 1])
def test_fewer_than_two_items_give_nan(name, size):
    with pytest.warns(UndefinedMetricWarning, match="undefined"):
        assert math.isnan(metrics.METRICS[name](np.ones(size), np.ones(size)))


@pytest.mark.parametrize("size", [2, 3])
def test_logistic_fit_needs_four_items(size):
    with pytest.warns(UndefinedMetricWarning, match="at least 4"):
        assert math.isnan(metrics.plcc_logistic(np.arange(size), np.arange(size) ** 2))
    with pytest.warns(UndefinedMetricWarning):
        result = evaluate_predictions(np.arange(size), np.arange(size) ** 2, bootstrap=20)
    assert result["srcc"]["value"] == pytest.approx(1.0)


def test_rmse_edge_cases():
    assert metrics.rmse([2.0], [5.0]) == pytest.approx(3.0)
    assert metrics.rmse(np.full(4, 1.0), np.full(4, 1.0)) == 0.0
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(metrics.rmse([], []))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        metrics.plcc([1, np.nan, 3], [1, 2, 3])


def test_bootstrap_interval_contains_estimate_and_is_seeded(data):
    p, y = data
    for name in metrics.METRICS:
        value = metrics.METRICS[name](p, y)
        low, high = metrics.bootstrap_interval(name, p, y, num_resamples=100, seed=3)
        assert low <= value <= high, name
        assert low < high, name
        assert (low, high) == metrics.bootstrap_interval(name, p, y, num_resamples=100, seed=3)
    assert metrics.bootstrap_interval("srcc", p, y, 100, seed=4) != metrics.bootstrap_interval("srcc", p, y, 100, seed=3)


def test_bootstrap_of_undefined_metric_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resample warnings are silenced
        assert all(math.isnan(v) for v in metrics.bootstrap_interval("srcc", np.full(8, 1.0), np.arange(8.0), 50))
        assert all(math.isnan(v) for v in metrics.bootstrap_interval("srcc", [1.0], [2.0], 50))


def test_evaluate_predictions(data):
    p, y = data
    result = evaluate_predictions(p, y, bootstrap=100, seed=0)
    assert result["num_items"] == 60
    for name in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
        entry = result[name]
        assert entry["value"] == pytest.approx(metrics.METRICS[name](p, y))
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert len(result["logistic"]) == 4
    assert result == evaluate_predictions(p, y, bootstrap=100, seed=0)
    table = format_metrics_table(result)
    assert "PLCC (logistic)" in table and "SRCC" in table


def test_evaluate_predictions_constant_is_nan_not_crash():
    with pytest.warns(UndefinedMetricWarning):
        result = evaluate_predictions(np.full(6, 3.0), np.arange(6.0), bootstrap=50)
    assert math.isnan(result["srcc"]["value"]) and math.isnan(result["srcc"]["ci_low"])
    assert result["rmse"]["value"] > 0
    assert result["logistic"] is None
    text = json.dumps(to_json(result), allow_nan=False)  # strict JSON: NaN becomes null
    assert json.loads(text)["srcc"]["value"] is None
    assert "nan" in format_metrics_table(result)
