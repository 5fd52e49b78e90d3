"""BRISQUE: 36 natural-scene features and a regressor fitted on your own labels.

`brisque_features(image)` follows `brisque_feature.m` of the LIVE release
(Mittal, Moorthy and Bovik, IEEE TIP 2012): MATLAB `rgb2gray`, MSCN with
zero padding, 18 features (`nss.brisque_scale_features`) at full scale and
18 after `imresize(x, 0.5)`.

`BRISQUERegressor` maps features to scores. The original fits libsvm's
epsilon-SVR (RBF kernel) on features scaled to [-1, 1]; libsvm is not a
dependency here, so the regressor is RBF kernel ridge regression in closed
form, on the same [-1, 1] scaling fitted on the training features, with its
two hyper-parameters (kernel `gamma`, ridge `lambda`) chosen by a seeded
K-fold cross-validation inside the training set. A fitted regressor saves as
JSON (`to_json` / `from_json`) and predicts the same numbers after a round
trip.

Example:
>>> from keras_adtrs.baselines import BRISQUERegressor, brisque_features  # doctest: +SKIP
>>> x = np.stack([brisque_features(p) for p in train_paths])  # doctest: +SKIP
>>> model = BRISQUERegressor().fit(x, train_scores)  # doctest: +SKIP
>>> model.predict(np.stack([brisque_features(p) for p in test_paths]))  # doctest: +SKIP
"""

import json

import numpy as np

from keras_adtrs.errors import ADTRSError
from keras_adtrs.baselines import nss

#: Images must be at least this many pixels on each side (the half scale
#: still holds two 7x7 windows).
MIN_SIZE = 32
NUM_FEATURES = 36
#: Names of the 36 features: `s1_...` full scale, `s2_...` half scale.
FEATURE_NAMES = tuple(f"s{s}_{n}" for s in (1, 2) for n in nss.BRISQUE_SCALE_NAMES)
#: Default search grids (the original SVR used gamma 0.05 on [-1, 1] features).
DEFAULT_GAMMAS = tuple(float(2.0**k) for k in range(-10, 2))
DEFAULT_LAMBDAS = tuple(float(10.0**k) for k in range(-6, 2))
_FORMAT = "keras_adtrs.baselines.BRISQUERegressor"


class NotFittedError(ADTRSError, ValueError):
    """A regressor was used before `fit` (or loaded from an unfitted state)."""


def brisque_features(image, index=0, decoder=None):
    """The 36 BRISQUE features of one image.

    Args:
        image: a file path, encoded bytes or a pixel array (see
            `nss.read_gray`).
        index: int. Position in the caller's list, naming unnamed inputs in
            errors. Defaults to `0`.
        decoder: `"pil"`, `"tensorflow"` or None (`load_image`'s default).

    Returns:
        float64 array `(36,)`, ordered as `FEATURE_NAMES`.

    Raises:
        keras_adtrs.data.images.ImageReadError: unreadable input.
        nss.ImageTooSmallError: a side is shorter than `MIN_SIZE`.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> brisque_features(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).shape
    (36,)
    """
    gray = nss.read_gray(image, index, decoder)
    if min(gray.shape) < MIN_SIZE:
        raise nss.ImageTooSmallError(
            f"{nss.source_name(image, index)}: {gray.shape[1]}x{gray.shape[0]} px is too small for BRISQUE "
            f"(each side needs at least {MIN_SIZE} px)"
        )
    return brisque_features_of_gray(gray)


def brisque_features_of_gray(gray):
    """The 36 BRISQUE features of a float grey image (no decoding, no size check).

    Args:
        gray: 2-D array of grey levels in [0, 255] (e.g. `nss.read_gray`).

    Returns:
        float64 array `(36,)`.

    Example:
    >>> brisque_features_of_gray(np.random.default_rng(0).uniform(0, 255, (40, 40))).shape
    (36,)
    """
    full = np.asarray(gray, dtype=np.float64)
    half = nss.imresize_bicubic(full, 0.5)
    return np.concatenate([nss.brisque_scale_features(nss.mscn(x, "zero")[0]) for x in (full, half)])


def _rbf(a, b, gamma):
    sq = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * (a @ b.T)
    return np.exp(-gamma * np.maximum(sq, 0.0))


def _check_matrix(features, name="features"):
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n_images, n_features), got shape {x.shape}")
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        row, column = bad[0]
        raise ValueError(f"{name} has a non-finite value at row {row}, column {column}: {x[row, column]!r}")
    return x


def _check_grid(values, name):
    grid = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64)))
    if not grid or not all(np.isfinite(v) and v > 0 for v in grid):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    return grid


class BRISQUERegressor:
    """Feature scaling to [-1, 1] and RBF kernel ridge regression, tuned by inner K-fold.

    Replaces the original BRISQUE epsilon-SVR (libsvm, RBF kernel) by kernel
    ridge regression, solved in closed form: `alpha = (K + lambda I)^-1 (y -
    mean(y))`, prediction `k(x)^T alpha + mean(y)`, `K_ij = exp(-gamma
    |x_i - x_j|^2)`. `fit` scales every feature linearly so that the
    training set spans [-1, 1] (libsvm's `svm-scale`), then picks
    `(gamma, lambda)` from the grids by the mean squared error of a
    `folds`-fold cross-validation on the training set only (folds drawn with
    `numpy.random.default_rng(seed)`), and refits on the whole training set.

    Args:
        gammas: RBF kernel widths to try. Defaults to `DEFAULT_GAMMAS`.
        lambdas: ridge penalties to try. Defaults to `DEFAULT_LAMBDAS`.
        folds: int >= 2. Inner cross-validation folds. Defaults to `5`.
        seed: int. Seed of the fold assignment. Defaults to `0`.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(40, 3)); y = x[:, 0] ** 2
    >>> model = BRISQUERegressor(folds=4).fit(x, y)
    >>> model.predict(x[:2]).shape
    (2,)
    """

    def __init__(self, gammas=DEFAULT_GAMMAS, lambdas=DEFAULT_LAMBDAS, folds=5, seed=0):
        self.gammas = _check_grid(gammas, "gammas")
        self.lambdas = _check_grid(lambdas, "lambdas")
        if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
            raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.folds, self.seed = int(folds), int(seed)
        self.feature_min_ = self.feature_range_ = None
        self.train_features_ = self.dual_coef_ = None
        self.intercept_ = self.gamma_ = self.lambda_ = None
        self.cv_mse_ = None

    # -- fitting -----------------------------------------------------------

    def fit(self, features, labels):
        """Fits the scaling, chooses `(gamma, lambda)` by inner K-fold, solves the ridge.

        Args:
            features: array `(n, d)` (e.g. stacked `brisque_features`), finite.
            labels: array `(n,)` of finite scores.

        Returns:
            self.

        Raises:
            ValueError: bad shapes, non-finite values, or fewer than
                `2 * folds` images.

        Example:
        >>> x = np.random.default_rng(0).normal(size=(20, 2))
        >>> BRISQUERegressor(folds=2).fit(x, x[:, 0]).gamma_ in DEFAULT_GAMMAS
        True
        """
        x = _check_matrix(features)
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"labels has {y.shape[0]} values for {x.shape[0]} feature rows")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"labels has a non-finite value at {int(np.argmin(np.isfinite(y)))}")
        if x.shape[0] < 2 * self.folds:
            raise ValueError(f"need at least {2 * self.folds} training images for {self.folds} folds, got {x.shape[0]}")
        self.feature_min_ = x.min(axis=0)
        spread = x.max(axis=0) - self.feature_min_
        self.feature_range_ = np.where(spread > 0, spread, 1.0)
        scaled = self._scale(x)
        self.cv_mse_ = self._cross_validate(scaled, y)
        best_gamma, best_lambda = np.unravel_index(np.argmin(self.cv_mse_), self.cv_mse_.shape)
        self.gamma_, self.lambda_ = self.gammas[best_gamma], self.lambdas[best_lambda]
        self.intercept_ = float(y.mean())
        kernel = _rbf(scaled, scaled, self.gamma_)
        self.dual_coef_ = np.linalg.solve(kernel + self.lambda_ * np.eye(len(y)), y - self.intercept_)
        self.train_features_ = scaled
        return self

    def _scale(self, x):
        return -1.0 + 2.0 * (x - self.feature_min_) / self.feature_range_

    def _cross_validate(self, x, y):
        """Mean squared validation error, array `(len(gammas), len(lambdas))`."""
        order = np.random.default_rng(self.seed).permutation(len(y))
        errors = np.zeros((len(self.gammas), len(self.lambdas)))
        for held_out in np.array_split(order, self.folds):
            train = np.setdiff1d(order, held_out)
            y_mean = y[train].mean()
            for g, gamma in enumerate(self.gammas):
                values, vectors = np.linalg.eigh(_rbf(x[train], x[train], gamma))
                values = np.maximum(values, 0.0)
                projected = vectors.T @ (y[train] - y_mean)
                cross = _rbf(x[held_out], x[train], gamma) @ vectors
                for k, lam in enumerate(self.lambdas):
                    predicted = cross @ (projected / (values + lam)) + y_mean
                    errors[g, k] += np.sum((predicted - y[held_out]) ** 2)
        return errors / len(y)

    # -- prediction --------------------------------------------------------

    def predict(self, features):
        """Predicted scores.

        Args:
            features: array `(n, d)` or `(d,)`, `d` as in training, finite.

        Returns:
            float64 array `(n,)`.

        Raises:
            NotFittedError: `fit` was not called.
            ValueError: wrong width or non-finite values.

        Example:
        >>> x = np.random.default_rng(0).normal(size=(20, 2))
        >>> BRISQUERegressor(folds=2).fit(x, x[:, 0]).predict(x[0]).shape
        (1,)
        """
        if self.dual_coef_ is None:
            raise NotFittedError("BRISQUERegressor is not fitted: call fit(features, labels) first")
        x = np.asarray(features, dtype=np.float64)
        x = _check_matrix(x[None, :] if x.ndim == 1 else x)
        if x.shape[1] != self.train_features_.shape[1]:
            raise ValueError(f"features have {x.shape[1]} columns, the regressor was fitted on {self.train_features_.shape[1]}")
        return _rbf(self._scale(x), self.train_features_, self.gamma_) @ self.dual_coef_ + self.intercept_

    # -- saving ------------------------------------------------------------

    def get_config(self):
        """The constructor's arguments, as a JSON-ready dict.

        Returns:
            dict with `gammas`, `lambdas`, `folds`, `seed`.

        Example:
        >>> BRISQUERegressor(folds=3).get_config()["folds"]
        3
        """
        return {"gammas": list(self.gammas), "lambdas": list(self.lambdas), "folds": self.folds, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        """An unfitted regressor from `get_config()`'s dict.

        Example:
        >>> BRISQUERegressor.from_config(BRISQUERegressor(seed=3).get_config()).seed
        3
        """
        return cls(**config)

    def to_json(self):
        """The configuration and the fitted state as a JSON string (floats round-trip exactly).

        Returns:
            str.

        Raises:
            NotFittedError: `fit` was not called.

        Example:
        >>> x = np.random.default_rng(0).normal(size=(20, 2))
        >>> model = BRISQUERegressor(folds=2).fit(x, x[:, 0])
        >>> bool((BRISQUERegressor.from_json(model.to_json()).predict(x) == model.predict(x)).all())
        True
        """
        if self.dual_coef_ is None:
            raise NotFittedError("BRISQUERegressor is not fitted: nothing to save")
        state = {
            "feature_min": self.feature_min_.tolist(),
            "feature_range": self.feature_range_.tolist(),
            "train_features": self.train_features_.tolist(),
            "dual_coef": self.dual_coef_.tolist(),
            "intercept": self.intercept_,
            "gamma": self.gamma_,
            "lambda": self.lambda_,
            "cv_mse": self.cv_mse_.tolist(),
        }
        return json.dumps({"format": _FORMAT, "version": 1, "config": self.get_config(), "state": state})

    @classmethod
    def from_json(cls, text):
        """A fitted regressor from `to_json()`'s string.

        Args:
            text: str (or bytes).

        Returns:
            BRISQUERegressor.

        Raises:
            ValueError: not JSON, or not a saved BRISQUERegressor.

        Example:
        >>> BRISQUERegressor.from_json(open("brisque.json").read())  # doctest: +SKIP
        """
        try:
            content = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a saved BRISQUERegressor: invalid JSON ({exc})") from None
        if not isinstance(content, dict) or content.get("format") != _FORMAT or "state" not in content:
            raise ValueError(f"not a saved BRISQUERegressor (expected format {_FORMAT!r})")
        model = cls.from_config(content["config"])
        state = content["state"]
        model.feature_min_ = np.asarray(state["feature_min"], dtype=np.float64)
        model.feature_range_ = np.asarray(state["feature_range"], dtype=np.float64)
        model.train_features_ = np.asarray(state["train_features"], dtype=np.float64)
        model.dual_coef_ = np.asarray(state["dual_coef"], dtype=np.float64)
        model.intercept_, model.gamma_, model.lambda_ = state["intercept"], state["gamma"], state["lambda"]
        model.cv_mse_ = np.asarray(state["cv_mse"], dtype=np.float64)
        return model

    def save(self, path):
        """Writes `to_json()` to `path`.

        Args:
            path: str or path-like.

        Example:
        >>> model.save("brisque.json")  # doctest: +SKIP
        """
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json())

    @classmethod
    def load(cls, path):
        """Reads a regressor written by `save`.

        Args:
            path: str or path-like.

        Returns:
            BRISQUERegressor.

        Example:
        >>> BRISQUERegressor.load("brisque.json").predict(features)  # doctest: +SKIP
        """
        with open(path, encoding="utf-8") as handle:
            return cls.from_json(handle.read())
