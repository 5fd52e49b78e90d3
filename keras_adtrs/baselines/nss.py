"""Natural-scene statistics shared by BRISQUE and NIQE (numpy + scipy only).

The pieces of the two LIVE MATLAB releases (Mittal, Moorthy and Bovik,
"No-Reference Image Quality Assessment in the Spatial Domain", IEEE TIP 2012;
Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE SPL 2013), written again from their definitions:

- `read_gray`: any image (path, bytes, array) -> float64 grey levels, decoded
  by `keras_adtrs.data.images.load_image` and converted with `rgb2gray`
  (MATLAB's `rgb2gray` on uint8: the coefficients below, rounded to uint8);
- `mscn`: mean-subtracted contrast-normalised coefficients
  `(I - mu) / (sigma + 1)`, with `mu` and `sigma` the local mean and standard
  deviation under a 7x7 Gaussian window of sigma 7/6 (`fspecial('gaussian',
  7, 7/6)`). The border rule differs between the releases and is an
  argument: BRISQUE's `filter2(..., 'same')` pads with zeros (`"zero"`),
  NIQE's `imfilter(..., 'replicate')` repeats the edge (`"replicate"`);
- `fit_ggd` / `fit_aggd`: the moment-matching estimators of the releases,
  shape searched on the grid `0.2:0.001:10`;
- `pairwise_products`: the horizontal, vertical and two diagonal neighbour
  products, wrapping around the borders as MATLAB's `circshift` does;
- `brisque_scale_features` / `niqe_scale_features`: the 18 numbers per scale
  of each release (they differ: see their docstrings);
- `imresize_bicubic`: MATLAB's `imresize(x, scale)` for a 2-D float image
  (bicubic kernel a = -0.5, antialiasing when shrinking, symmetric border,
  output size `ceil(scale * size)`).

Degenerate input (a flat image or patch, where a distribution has no
negative or no positive values) gives NaN features rather than an error:
NIQE drops such patches (MATLAB's `nanmean`/`nancov`), BRISQUE's regressor
refuses non-finite features.
"""

import os

import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.special

from keras_adtrs.errors import ADTRSError
from keras_adtrs.data.images import load_image

#: MATLAB's `rgb2gray` weights (the first row of the inverse NTSC matrix).
RGB2GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
#: The shape parameters the releases search: MATLAB's `0.2:0.001:10`.
SHAPE_GRID = np.arange(200, 10001) / 1000.0
#: The MSCN window: size, sigma and the stabilising constant C of the releases.
WINDOW_SIZE = 7
WINDOW_SIGMA = 7.0 / 6.0
MSCN_C = 1.0
#: Border rules of `mscn`: BRISQUE's `filter2` and NIQE's `imfilter(..., 'replicate')`.
PADDINGS = {"zero": "constant", "replicate": "nearest"}
#: `circshift` offsets (rows, columns) of the four products, BRISQUE's order:
#: horizontal, vertical, main diagonal, anti-diagonal.
PRODUCT_SHIFTS = {"H": (0, 1), "V": (1, 0), "D1": (1, 1), "D2": (-1, 1)}
#: Names of the 18 features of one scale, in order.
BRISQUE_SCALE_NAMES = ("ggd_shape", "ggd_variance") + tuple(
    f"{p}_{q}" for p in PRODUCT_SHIFTS for q in ("shape", "mean", "left_variance", "right_variance")
)
NIQE_SCALE_NAMES = ("aggd_shape", "aggd_scale") + tuple(
    f"{p}_{q}" for p in PRODUCT_SHIFTS for q in ("shape", "mean", "left_scale", "right_scale")
)

_GAMMA1 = scipy.special.gamma(1.0 / SHAPE_GRID)
_GAMMA2 = scipy.special.gamma(2.0 / SHAPE_GRID)
_GAMMA3 = scipy.special.gamma(3.0 / SHAPE_GRID)
#: E[x^2] / E[|x|]^2 of a GGD of each shape (`estimateggdparam.m`).
_GGD_RATIO = _GAMMA1 * _GAMMA3 / _GAMMA2**2
#: E[|x|]^2 / E[x^2] of a symmetric GGD of each shape (`estimateaggdparam.m`).
_AGGD_RATIO = _GAMMA2**2 / (_GAMMA1 * _GAMMA3)


class ImageTooSmallError(ADTRSError, ValueError):
    """An image is too small for a measure; the message names it and its size."""


def source_name(image, index=0):
    """How error messages name an input: the path, or its list position and type.

    Example:
    >>> source_name(np.zeros((2, 2)), 3)
    'image #3 (ndarray)'
    """
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return f"image #{index} ({type(image).__name__})"


def read_gray(image, index=0, decoder=None):
    """Reads an image as MATLAB's `double(rgb2gray(uint8 image))`.

    Args:
        image: a file path, encoded image bytes or a pixel array (anything
            `keras_adtrs.data.images.load_image` reads; grayscale, alpha and
            16-bit input are normalised to uint8 RGB there).
        index: int. Position in the caller's list, naming unnamed inputs in
            error messages. Defaults to `0`.
        decoder: `"pil"`, `"tensorflow"` or None (`load_image`'s default).
            JPEG pixels may differ by a few levels between the two.

    Returns:
        float64 array `(H, W)` of integer grey levels in [0, 255].

    Raises:
        keras_adtrs.data.images.ImageReadError: unreadable or undecodable
            input; the message names it.

    Example:
    >>> read_gray(np.full((2, 2, 3), 7, np.uint8))
    array([[7., 7.],
           [7., 7.]])
    """
    return rgb2gray(load_image(image, index, decoder=decoder))


def rgb2gray(rgb):
    """MATLAB's `rgb2gray`, as float64.

    Integer input (uint8 RGB from `load_image`) is rounded half away from
    zero and saturated to [0, 255], as MATLAB returns uint8 for uint8 input;
    float input is not rounded (MATLAB's rule for double input).

    Args:
        rgb: array `(H, W, 3)`.

    Returns:
        float64 array `(H, W)`.

    Raises:
        ValueError: `rgb` is not `(H, W, 3)`.

    Example:
    >>> rgb2gray(np.array([[[255, 0, 0]]], np.uint8))
    array([[76.]])
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb2gray expects an (H, W, 3) array, got shape {rgb.shape}")
    gray = rgb.astype(np.float64) @ RGB2GRAY_WEIGHTS
    if np.issubdtype(rgb.dtype, np.integer):
        gray = np.clip(np.floor(gray + 0.5), 0.0, 255.0)
    return gray


def gaussian_window(size=WINDOW_SIZE, sigma=WINDOW_SIGMA):
    """MATLAB's `fspecial('gaussian', size, sigma)`: a normalised 2-D window.

    Args:
        size: int. Odd side length. Defaults to `7`.
        sigma: float. Standard deviation in pixels. Defaults to `7/6`.

    Returns:
        float64 array `(size, size)` summing to 1.

    Example:
    >>> round(float(gaussian_window().sum()), 12)
    1.0
    """
    window = _gaussian_1d(size, sigma)
    return np.outer(window, window)


def _gaussian_1d(size, sigma):
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return window / window.sum()


def _local_mean(image, padding):
    """Separable Gaussian filtering; equal to the 2-D window under both border rules."""
    window = _gaussian_1d(WINDOW_SIZE, WINDOW_SIGMA)
    mode = PADDINGS[padding]
    rows = scipy.ndimage.correlate1d(image, window, axis=0, mode=mode, cval=0.0)
    return scipy.ndimage.correlate1d(rows, window, axis=1, mode=mode, cval=0.0)


def mscn(gray, padding="zero"):
    """Mean-subtracted contrast-normalised coefficients and the local deviation.

    `(I - mu) / (sigma + 1)` with `mu = G * I` and `sigma = sqrt(|G * I^2 -
    mu^2|)`, `G` the 7x7 Gaussian window of sigma 7/6.

    Args:
        gray: 2-D array of grey levels in [0, 255].
        padding: `"zero"` (BRISQUE: `filter2(..., 'same')`) or `"replicate"`
            (NIQE: `imfilter(..., 'replicate')`). Defaults to `"zero"`.

    Returns:
        tuple `(coefficients, sigma)`, float64 arrays of the shape of `gray`.

    Raises:
        ValueError: `gray` is not 2-D, or an unknown `padding`.

    Example:
    >>> coefficients, sigma = mscn(np.full((8, 8), 100.0), padding="replicate")
    >>> bool(abs(coefficients).max() < 1e-9)
    True
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {sorted(PADDINGS)}, got {padding!r}")
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ValueError(f"mscn expects a 2-D grey image, got shape {gray.shape}")
    mu = _local_mean(gray, padding)
    sigma = np.sqrt(np.abs(_local_mean(gray * gray, padding) - mu * mu))
    return (gray - mu) / (sigma + MSCN_C), sigma


def fit_ggd(values):
    """Moment-matching fit of a zero-mean generalised Gaussian (`estimateggdparam.m`).

    The shape is the grid value whose ratio `E[x^2] / E[|x|]^2` is nearest
    the sample's.

    Args:
        values: array of samples (flattened).

    Returns:
        tuple `(shape, sigma)` of floats; `sigma = sqrt(mean(x^2))`. `shape` is
        NaN when all samples are zero.

    Example:
    >>> shape, sigma = fit_ggd(np.random.default_rng(0).normal(size=100000))
    >>> abs(shape - 2.0) < 0.05
    True
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    sigma_sq = np.mean(x * x)
    mean_abs = np.mean(np.abs(x))
    if not mean_abs > 0:
        return float("nan"), float(np.sqrt(sigma_sq))
    rho = sigma_sq / mean_abs**2
    shape = SHAPE_GRID[np.argmin(np.abs(rho - _GGD_RATIO))]
    return float(shape), float(np.sqrt(sigma_sq))


def fit_aggd(values):
    """Moment-matching fit of an asymmetric generalised Gaussian (`estimateaggdparam.m`).

    Args:
        values: array of samples (flattened).

    Returns:
        tuple `(shape, left_std, right_std)` of floats: the root mean squares
        of the negative and of the positive samples (zeros count in neither),
        and the grid shape matching the normalised ratio
        `E[|x|]^2 / E[x^2]`. All NaN when there is no negative or no positive
        sample.

    Example:
    >>> shape, left, right = fit_aggd(np.random.default_rng(0).normal(size=100000))
    >>> abs(shape - 2.0) < 0.05 and abs(left / right - 1.0) < 0.02
    True
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    negative, positive = x[x < 0], x[x > 0]
    if not negative.size or not positive.size:
        return float("nan"), float("nan"), float("nan")
    left_std = np.sqrt(np.mean(negative * negative))
    right_std = np.sqrt(np.mean(positive * positive))
    gamma_hat = left_std / right_std
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    r_hat_norm = r_hat * (gamma_hat**3 + 1.0) * (gamma_hat + 1.0) / (gamma_hat**2 + 1.0) ** 2
    shape = SHAPE_GRID[np.argmin((_AGGD_RATIO - r_hat_norm) ** 2)]
    return float(shape), float(left_std), float(right_std)


def aggd_scales(shape, left_std, right_std):
    """AGGD scale parameters from the fit: `beta = std * sqrt(G(1/a) / G(3/a))`.

    Args:
        shape, left_std, right_std: floats from `fit_aggd`.

    Returns:
        tuple `(beta_left, beta_right)` of floats.

    Example:
    >>> [round(b, 6) for b in aggd_scales(2.0, 1.0, 1.0)]
    [1.414214, 1.414214]
    """
    factor = np.sqrt(scipy.special.gamma(1.0 / shape) / scipy.special.gamma(3.0 / shape))
    return float(left_std * factor), float(right_std * factor)


def aggd_mean(shape, left_std, right_std):
    """Mean of the fitted AGGD: `(beta_r - beta_l) * G(2/a) / G(1/a)`.

    Args:
        shape, left_std, right_std: floats from `fit_aggd`.

    Returns:
        float.

    Example:
    >>> aggd_mean(2.0, 1.0, 1.0)
    0.0
    """
    beta_left, beta_right = aggd_scales(shape, left_std, right_std)
    return float((beta_right - beta_left) * scipy.special.gamma(2.0 / shape) / scipy.special.gamma(1.0 / shape))


def pairwise_products(coefficients):
    """Products of each MSCN coefficient with its H, V, D1 and D2 neighbour.

    `x * circshift(x, shift)` with MATLAB's circular shifts (the products wrap
    around the borders). NIQE writes the anti-diagonal shift as `[1 -1]` and
    BRISQUE as `[-1 1]`: the two give the same products, in another order.

    Args:
        coefficients: 2-D array.

    Returns:
        dict `name -> array` for `"H"`, `"V"`, `"D1"`, `"D2"`, in that order.

    Example:
    >>> sorted(pairwise_products(np.ones((3, 3))))
    ['D1', 'D2', 'H', 'V']
    """
    x = np.asarray(coefficients, dtype=np.float64)
    return {name: x * np.roll(x, shift, axis=(0, 1)) for name, shift in PRODUCT_SHIFTS.items()}


def brisque_scale_features(coefficients):
    """BRISQUE's 18 features of one scale (`brisque_feature.m`).

    `[ggd_shape, ggd_sigma^2]` of the MSCN coefficients, then for each of the
    H, V, D1, D2 products `[aggd_shape, aggd_mean, left_std^2, right_std^2]`
    (variances of the two sides; names in `BRISQUE_SCALE_NAMES`).

    Args:
        coefficients: 2-D MSCN array (`mscn(..., padding="zero")`).

    Returns:
        float64 array `(18,)`.

    Example:
    >>> coefficients, _ = mscn(np.random.default_rng(0).uniform(0, 255, (32, 32)))
    >>> brisque_scale_features(coefficients).shape
    (18,)
    """
    shape, sigma = fit_ggd(coefficients)
    out = [shape, sigma**2]
    for product in pairwise_products(coefficients).values():
        shape, left_std, right_std = fit_aggd(product)
        out += [shape, aggd_mean(shape, left_std, right_std), left_std**2, right_std**2]
    return np.array(out, dtype=np.float64)


def niqe_scale_features(coefficients):
    """NIQE's 18 features of one scale of one patch (`computefeature.m`).

    Unlike BRISQUE, NIQE fits an AGGD (not a GGD) to the MSCN coefficients,
    keeping `[shape, (beta_l + beta_r) / 2]`, and keeps the AGGD scale
    parameters `beta` (not the variances) of the products: for each of H, V,
    D1, D2 `[shape, mean, beta_l, beta_r]` (names in `NIQE_SCALE_NAMES`).
    The MATLAB pristine model is defined on these numbers.

    Args:
        coefficients: 2-D MSCN array of one patch (`mscn(...,
            padding="replicate")` of the whole image, then cut); the
            products wrap around inside the patch, as in MATLAB.

    Returns:
        float64 array `(18,)`.

    Example:
    >>> coefficients, _ = mscn(np.random.default_rng(0).uniform(0, 255, (32, 32)), "replicate")
    >>> niqe_scale_features(coefficients).shape
    (18,)
    """
    shape, left_std, right_std = fit_aggd(coefficients)
    beta_left, beta_right = aggd_scales(shape, left_std, right_std)
    out = [shape, (beta_left + beta_right) / 2.0]
    for product in pairwise_products(coefficients).values():
        shape, left_std, right_std = fit_aggd(product)
        out += [shape, aggd_mean(shape, left_std, right_std), *aggd_scales(shape, left_std, right_std)]
    return np.array(out, dtype=np.float64)


def _cubic(x):
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_matrix(in_length, scale):
    """Sparse `(out, in)` matrix of MATLAB's `imresize` along one axis (`contributions`)."""
    out_length = int(np.ceil(in_length * scale))
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinates
    left = np.floor(u - width / 2.0)
    taps = int(np.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if antialias else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])  # symmetric border
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    rows = np.repeat(np.arange(out_length), taps)
    matrix = scipy.sparse.coo_matrix(
        (weights.ravel(), (rows, columns.ravel())), shape=(out_length, in_length)
    )
    return matrix.tocsr()  # duplicates (mirrored taps) are summed


def imresize_bicubic(gray, scale=0.5):
    """MATLAB's `imresize(gray, scale)` (bicubic, antialiased when shrinking) for float input.

    Rows are resized first, then columns (MATLAB's order for equal scales);
    the border is symmetric (edge repeated), the output size is
    `ceil(scale * size)` and nothing is rounded, as MATLAB does for a double
    image. Differences from MATLAB: only 2-D float images are handled (MATLAB
    also rounds and saturates integer images), and sums are accumulated in
    another order, so values agree to rounding (about 1e-13 of the range).

    Args:
        gray: 2-D array.
        scale: float > 0. Defaults to `0.5`.

    Returns:
        float64 array `(ceil(scale * H), ceil(scale * W))`.

    Raises:
        ValueError: `gray` is not 2-D or `scale` is not positive.

    Example:
    >>> imresize_bicubic(np.ones((5, 8))).shape
    (3, 4)
    """
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ValueError(f"imresize_bicubic expects a 2-D image, got shape {gray.shape}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    rows = _resize_matrix(gray.shape[0], scale) @ gray
    return np.asarray((_resize_matrix(gray.shape[1], scale) @ rows.T).T)
