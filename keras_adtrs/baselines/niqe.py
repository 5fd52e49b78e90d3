"""NIQE: distance of an image's patch statistics from a pristine multivariate Gaussian.

Follows the LIVE MATLAB release (Mittal, Soundararajan and Bovik, IEEE SPL
2013; `computequality.m`, `estimatemodelparam.m`):

- the grey image (MATLAB `rgb2gray`) is cropped at the bottom and right to a
  whole number of `patch_size` patches; MSCN coefficients with replicated
  borders; 18 features (`nss.niqe_scale_features`) per patch on a
  non-overlapping grid, then the same on `imresize(image, 0.5)` with
  half-size patches: 36 features per patch;
- fitting (`NIQEModel.fit`) keeps, in each pristine image, the patches whose
  sharpness (mean local standard deviation `sigma` of the MSCN step at full
  scale) exceeds `sharpness_threshold` times the image's largest patch
  sharpness, and fits a mean vector and covariance to all kept patches;
- scoring (`NIQEModel.score`) keeps every patch, fits their mean `mu_d` and
  covariance `S_d` and returns
  `sqrt((mu_p - mu_d)^T pinv((S_p + S_d) / 2) (mu_p - mu_d))`; lower is
  better. Patches with NaN features (flat areas) are dropped (`nanmean`,
  `nancov`).

`NIQEModel.from_matlab(path)` reads the release's `modelparameters.mat`
(`mu_prisparam`, `cov_prisparam`), so that scores are comparable with
published NIQE numbers.

Example:
>>> model = NIQEModel.fit(["pristine/a.png", "pristine/b.png"])  # doctest: +SKIP
>>> model.save("niqe_model.npz")  # doctest: +SKIP
>>> NIQEModel.load("niqe_model.npz").score("photo.jpg")  # doctest: +SKIP
"""

import json
import os

import numpy as np

from keras_adtrs.errors import ADTRSError
from keras_adtrs.baselines import nss

NUM_FEATURES = 36
#: Names of the 36 features: `s1_...` full scale, `s2_...` half scale.
FEATURE_NAMES = tuple(f"s{s}_{n}" for s in (1, 2) for n in nss.NIQE_SCALE_NAMES)
DEFAULT_PATCH_SIZE = 96
DEFAULT_SHARPNESS_THRESHOLD = 0.75
#: Fitting needs at least this many patches by default: one more than the
#: number of features, so that the covariance can have full rank.
DEFAULT_MIN_PATCHES = NUM_FEATURES + 1
_FORMAT = "keras_adtrs.baselines.NIQEModel"


class TooFewPatchesError(ADTRSError, ValueError):
    """Too few usable patches to fit a mean and covariance; the message says how many."""


def _check_patch_size(patch_size):
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)):
        raise ValueError(f"patch_size must be an even integer >= 16, got {patch_size!r}")
    if patch_size < 16 or patch_size % 2:
        raise ValueError(f"patch_size must be an even integer >= 16, got {patch_size!r}")
    return int(patch_size)


def _check_threshold(sharpness_threshold):
    if sharpness_threshold is None:
        return None
    try:
        value = float(sharpness_threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"sharpness_threshold must lie in [0, 1] (or be None), got {sharpness_threshold!r}")
    return value


def _patches(array, size):
    """`(rows * cols, size, size)` non-overlapping patches, row by row."""
    rows, cols = array.shape[0] // size, array.shape[1] // size
    blocks = array[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return blocks.transpose(0, 2, 1, 3).reshape(rows * cols, size, size)


def gray_patch_features(gray, patch_size=DEFAULT_PATCH_SIZE, name="image"):
    """Features and sharpness of every patch of a grey image.

    Args:
        gray: 2-D float array of grey levels in [0, 255].
        patch_size: int. Even patch side at full scale. Defaults to `96`.
        name: str. Names the image in errors. Defaults to `"image"`.

    Returns:
        tuple `(features, sharpness)`: float64 arrays `(n, 36)` and `(n,)`,
        patches in row-major grid order (MATLAB's `blkproc` lists them
        column by column; the statistics do not depend on the order).

    Raises:
        nss.ImageTooSmallError: the image holds fewer than two patches
            (`floor(H / p) * floor(W / p) < 2`, the same count as half-size
            patches on the half-scale image), too few for a covariance.

    Example:
    >>> gray = np.random.default_rng(0).uniform(0, 255, (64, 96))
    >>> features, sharpness = gray_patch_features(gray, patch_size=32)
    >>> features.shape, sharpness.shape
    ((6, 36), (6,))
    """
    patch_size = _check_patch_size(patch_size)
    gray = np.asarray(gray, dtype=np.float64)
    rows, cols = gray.shape[0] // patch_size, gray.shape[1] // patch_size
    if rows * cols < 2:
        raise nss.ImageTooSmallError(
            f"{name}: {gray.shape[1]}x{gray.shape[0]} px holds {rows * cols} patch(es) of {patch_size} px "
            f"({patch_size // 2} px at the half scale); NIQE needs at least 2"
        )
    gray = gray[: rows * patch_size, : cols * patch_size]
    coefficients, sigma = nss.mscn(gray, padding="replicate")
    full = _scale_features(coefficients, patch_size)
    sharpness = _patches(sigma, patch_size).mean(axis=(1, 2))
    half_coefficients, _ = nss.mscn(nss.imresize_bicubic(gray, 0.5), padding="replicate")
    half = _scale_features(half_coefficients, patch_size // 2)
    return np.concatenate([full, half], axis=1), sharpness


def _scale_features(coefficients, size):
    """`(n, 18)` NIQE features of the non-overlapping `size` patches of one scale."""
    return np.stack([nss.niqe_scale_features(patch) for patch in _patches(coefficients, size)])


def niqe_patch_features(image, patch_size=DEFAULT_PATCH_SIZE, sharpness_threshold=None, index=0, decoder=None):
    """The 36 NIQE features of the patches of one image.

    Args:
        image: a file path, encoded bytes or a pixel array (see
            `nss.read_gray`).
        patch_size: int. Even patch side at full scale. Defaults to `96`.
        sharpness_threshold: None (scoring: keep every patch) or a float in
            [0, 1] (fitting: keep the patches whose sharpness is above this
            fraction of the image's sharpest patch; MATLAB uses 0.75).
            Defaults to None.
        index: int. Position in the caller's list, naming unnamed inputs in
            errors. Defaults to `0`.
        decoder: `"pil"`, `"tensorflow"` or None (`load_image`'s default).

    Returns:
        float64 array `(n_patches, 36)`, ordered as `FEATURE_NAMES`.

    Raises:
        keras_adtrs.data.images.ImageReadError: unreadable input.
        nss.ImageTooSmallError: fewer than two patches fit in the image.

    Example:
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    >>> niqe_patch_features(image, patch_size=32).shape
    (4, 36)
    """
    threshold = _check_threshold(sharpness_threshold)
    gray = nss.read_gray(image, index, decoder)
    features, sharpness = gray_patch_features(gray, patch_size, nss.source_name(image, index))
    if threshold is None:
        return features
    return features[sharpness > threshold * sharpness.max()]


def _nan_mean_cov(features, what):
    """MATLAB's `nanmean` (per column) and `nancov` (rows without NaN)."""
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < 2:
        raise TooFewPatchesError(
            f"{what}: {len(complete)} patch(es) without NaN features (of {len(features)}); at least 2 are "
            "needed for a covariance (flat areas give NaN features)"
        )
    return np.nanmean(features, axis=0), np.cov(complete, rowvar=False)


def _pinv(matrix):
    """MATLAB's `pinv`: singular values below `max(size) * eps * s_max` are dropped."""
    u, s, vt = np.linalg.svd(matrix)
    keep = s > max(matrix.shape) * np.finfo(np.float64).eps * s.max()
    return (vt[keep].T / s[keep]) @ u[:, keep].T


class NIQEModel:
    """A pristine multivariate Gaussian of NIQE patch features, and the NIQE score.

    Build one with `NIQEModel.fit(images)` (pristine photos, no human
    scores), `NIQEModel.from_matlab(path)` (the release's parameters) or
    `NIQEModel.load(path)`.

    Args:
        mean: array `(36,)`: mean of the pristine patch features.
        cov: array `(36, 36)`: their covariance.
        patch_size: int. Patch side used to fit, and to score. Defaults to `96`.
        sharpness_threshold: float or None. The selection used to fit
            (recorded only). Defaults to `0.75`.
        num_images: int or None. Pristine images fitted (recorded only).
        num_patches: int or None. Patches fitted (recorded only).

    Example:
    >>> model = NIQEModel(np.zeros(36), np.eye(36), patch_size=32)
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    >>> model.score(image) > 0
    True
    """

    def __init__(
        self,
        mean,
        cov,
        patch_size=DEFAULT_PATCH_SIZE,
        sharpness_threshold=DEFAULT_SHARPNESS_THRESHOLD,
        num_images=None,
        num_patches=None,
    ):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.cov = np.asarray(cov, dtype=np.float64)
        if self.mean.shape != (NUM_FEATURES,) or self.cov.shape != (NUM_FEATURES, NUM_FEATURES):
            raise ValueError(
                f"NIQEModel needs a mean of shape ({NUM_FEATURES},) and a covariance of shape "
                f"({NUM_FEATURES}, {NUM_FEATURES}), got {self.mean.shape} and {self.cov.shape}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.cov))):
            raise ValueError("NIQEModel mean and covariance must be finite")
        self.patch_size = _check_patch_size(patch_size)
        self.sharpness_threshold = _check_threshold(sharpness_threshold)
        self.num_images = None if num_images is None else int(num_images)
        self.num_patches = None if num_patches is None else int(num_patches)

    @classmethod
    def fit(
        cls,
        images,
        patch_size=DEFAULT_PATCH_SIZE,
        sharpness_threshold=DEFAULT_SHARPNESS_THRESHOLD,
        min_patches=DEFAULT_MIN_PATCHES,
        decoder=None,
    ):
        """Fits the pristine model to the sharp patches of pristine images.

        Args:
            images: iterable of file paths, encoded bytes or pixel arrays.
            patch_size: int. Even patch side. Defaults to `96` (MATLAB's).
            sharpness_threshold: float in [0, 1]. Patches sharper than this
                fraction of their image's sharpest patch are kept. Defaults
                to `0.75` (MATLAB's).
            min_patches: int >= 2. Fewest kept patches accepted. Defaults to
                `37` (one more than the number of features).
            decoder: `"pil"`, `"tensorflow"` or None (`load_image`'s default).

        Returns:
            NIQEModel.

        Raises:
            keras_adtrs.data.images.ImageReadError: an unreadable image.
            nss.ImageTooSmallError: an image holds fewer than two patches.
            TooFewPatchesError: fewer than `min_patches` patches were kept.

        Example:
        >>> NIQEModel.fit(["pristine/a.png", "pristine/b.png"], patch_size=96).num_patches  # doctest: +SKIP
        120
        """
        patch_size = _check_patch_size(patch_size)
        threshold = _check_threshold(sharpness_threshold)
        if threshold is None:
            raise ValueError("fitting needs a sharpness_threshold in [0, 1] (MATLAB uses 0.75)")
        if isinstance(min_patches, bool) or not isinstance(min_patches, (int, np.integer)) or min_patches < 2:
            raise ValueError(f"min_patches must be an integer >= 2, got {min_patches!r}")
        kept, count = [], 0
        for index, image in enumerate(images):
            kept.append(niqe_patch_features(image, patch_size, threshold, index=index, decoder=decoder))
            count += 1
        features = np.concatenate(kept) if kept else np.zeros((0, NUM_FEATURES))
        what = f"fitting on {count} image(s), patch_size {patch_size}, sharpness_threshold {threshold}"
        if len(features) < min_patches:
            raise TooFewPatchesError(
                f"{what}: {len(features)} patch(es) kept, at least {min_patches} needed; give more or larger "
                "pristine images, a smaller patch_size or a lower sharpness_threshold"
            )
        mean, cov = _nan_mean_cov(features, what)
        return cls(mean, cov, patch_size, threshold, num_images=count, num_patches=len(features))

    @classmethod
    def from_matlab(cls, path):
        """The model of a MATLAB `modelparameters.mat` (`mu_prisparam`, `cov_prisparam`; patches of 96).

        Args:
            path: str or path-like.

        Returns:
            NIQEModel.

        Raises:
            ValueError: the file lacks the two variables.

        Example:
        >>> NIQEModel.from_matlab("niqe_release/modelparameters.mat").score("photo.jpg")  # doctest: +SKIP
        """
        import scipy.io  # only this constructor reads MATLAB files

        content = scipy.io.loadmat(os.fspath(path))
        missing = [k for k in ("mu_prisparam", "cov_prisparam") if k not in content]
        if missing:
            raise ValueError(f"{os.fspath(path)}: no variable(s) {missing} (not a NIQE modelparameters.mat)")
        return cls(content["mu_prisparam"], content["cov_prisparam"], DEFAULT_PATCH_SIZE, DEFAULT_SHARPNESS_THRESHOLD)

    def score_features(self, features, name="image"):
        """NIQE from precomputed patch features (`niqe_patch_features`, every patch).

        Args:
            features: array `(n, 36)`.
            name: str. Names the image in errors. Defaults to `"image"`.

        Returns:
            float (lower is better).

        Raises:
            TooFewPatchesError: fewer than two patches without NaN features.

        Example:
        >>> model = NIQEModel(np.zeros(36), np.eye(36))
        >>> round(model.score_features(np.array([[1.0] * 36, [-1.0] * 36])), 3)
        0.0
        """
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != NUM_FEATURES:
            raise ValueError(f"{name}: patch features must have shape (n, {NUM_FEATURES}), got {features.shape}")
        mean, cov = _nan_mean_cov(features, name)
        difference = self.mean - mean
        return float(np.sqrt(difference @ _pinv((self.cov + cov) / 2.0) @ difference))

    def score(self, image, index=0, decoder=None):
        """NIQE of one image against this model (lower is better).

        Args:
            image: a file path, encoded bytes or a pixel array.
            index: int. Position in the caller's list, naming unnamed inputs
                in errors. Defaults to `0`.
            decoder: `"pil"`, `"tensorflow"` or None (`load_image`'s default).

        Returns:
            float.

        Raises:
            keras_adtrs.data.images.ImageReadError: unreadable input.
            nss.ImageTooSmallError: fewer than two patches fit in the image.
            TooFewPatchesError: fewer than two patches without NaN features.

        Example:
        >>> NIQEModel.load("niqe_model.npz").score("photo.jpg")  # doctest: +SKIP
        4.2
        """
        features = niqe_patch_features(image, self.patch_size, None, index=index, decoder=decoder)
        return self.score_features(features, nss.source_name(image, index))

    # -- saving ------------------------------------------------------------

    def get_config(self):
        """Settings and counts, as a JSON-ready dict (without the arrays).

        Example:
        >>> NIQEModel(np.zeros(36), np.eye(36)).get_config()["patch_size"]
        96
        """
        return {
            "patch_size": self.patch_size,
            "sharpness_threshold": self.sharpness_threshold,
            "num_images": self.num_images,
            "num_patches": self.num_patches,
        }

    def save(self, path):
        """Writes the model to `path`: `.npz` (arrays and a JSON header) or `.json`.

        Args:
            path: str or path-like ending in `.npz` or `.json`.

        Raises:
            ValueError: another extension.

        Example:
        >>> model.save("niqe_model.npz")  # doctest: +SKIP
        """
        path = os.fspath(path)
        header = {"format": _FORMAT, "version": 1, **self.get_config()}
        if path.endswith(".npz"):
            with open(path, "wb") as handle:  # np.savez would append ".npz" to other names
                np.savez(handle, mean=self.mean, cov=self.cov, header=np.array(json.dumps(header)))
        elif path.endswith(".json"):
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({**header, "mean": self.mean.tolist(), "cov": self.cov.tolist()}, handle)
        else:
            raise ValueError(f"{path}: NIQEModel.save writes .npz or .json files")

    @classmethod
    def load(cls, path):
        """Reads a model written by `save` (`.npz` or `.json`).

        Args:
            path: str or path-like.

        Returns:
            NIQEModel.

        Raises:
            ValueError: another extension, or not a saved NIQEModel.

        Example:
        >>> NIQEModel.load("niqe_model.json").patch_size  # doctest: +SKIP
        96
        """
        path = os.fspath(path)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as content:
                if "header" not in content:
                    raise ValueError(f"{path}: not a saved NIQEModel (no header)")
                header = json.loads(str(content["header"]))
                mean, cov = content["mean"], content["cov"]
        elif path.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                header = json.load(handle)
            mean, cov = header.get("mean"), header.get("cov")
        else:
            raise ValueError(f"{path}: NIQEModel.load reads .npz or .json files")
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a saved NIQEModel (expected format {_FORMAT!r})")
        return cls(
            mean,
            cov,
            header["patch_size"],
            header["sharpness_threshold"],
            header["num_images"],
            header["num_patches"],
        )
