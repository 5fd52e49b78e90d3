"""Synthetic distortions at graded levels, and full-reference measures (numpy, no TensorFlow).

Used by the embedded default data set (`keras_adtrs.data.synthetic`: the first
five kinds) and by quality-aware pre-training (`keras_adtrs.data.pretraining`:
all of them). Every kind has five levels, `1` (mildest) to `5` (strongest);
level `0` returns the image unchanged. Randomness (noise, the direction of a
motion blur) comes only from the `numpy.random.Generator` passed in, so a
distortion is a pure function of `(image, kind, level, rng state)`.

| kind | what it simulates | parameter by level 1..5 |
|---|---|---|
| `blur` | defocus: Gaussian blur | sigma 0.6, 1.0, 1.6, 2.4, 3.6 px |
| `noise` | sensor noise: white Gaussian | sigma 4, 8, 14, 22, 34 (0-255 units) |
| `jpeg` | compression: JPEG | quality 50, 30, 18, 10, 5 |
| `contrast` | haze, flat light: contrast around the mean | kept 0.8, 0.62, 0.46, 0.32, 0.2 |
| `exposure` | darkening tone curve: gamma on [0, 1] | gamma 1.25, 1.55, 1.9, 2.4, 3.0 |
| `motion_blur` | camera shake: a line kernel at a random angle | length 3, 5, 9, 13, 19 px |
| `lowlight_noise` | a dark scene amplified: photon (Poisson) and read noise, colour | photons at white 4000, 1500, 500, 160, 50 |
| `overexposure` | too much light: gain, highlights clip | x1.3, 1.6, 2.0, 2.6, 3.4 |
| `underexposure` | too little light: linear darkening | x0.72, 0.52, 0.38, 0.27, 0.18 |
| `desaturation` | washed-out colour: blend towards grey | colour kept 0.75, 0.55, 0.35, 0.18, 0 |
| `oversaturation` | boosted colour: away from grey, clips | x1.5, 2.0, 2.6, 3.3, 4.2 |
| `resampling` | digital zoom, small uploads: down, then up again | factor 1.5, 2, 2.8, 4, 5.5 |

The first five reproduce the default data set's distortions exactly (same
arithmetic, same random draws).
"""

import io

import numpy as np
from PIL import Image
from scipy import ndimage, signal

#: kind -> the parameter of levels 1..5 (see the module docstring).
LEVELS = {
    "blur": (0.6, 1.0, 1.6, 2.4, 3.6),
    "noise": (4.0, 8.0, 14.0, 22.0, 34.0),
    "jpeg": (50, 30, 18, 10, 5),
    "contrast": (0.8, 0.62, 0.46, 0.32, 0.2),
    "exposure": (1.25, 1.55, 1.9, 2.4, 3.0),
    "motion_blur": (3, 5, 9, 13, 19),
    "lowlight_noise": (4000.0, 1500.0, 500.0, 160.0, 50.0),
    "overexposure": (1.3, 1.6, 2.0, 2.6, 3.4),
    "underexposure": (0.72, 0.52, 0.38, 0.27, 0.18),
    "desaturation": (0.75, 0.55, 0.35, 0.18, 0.0),
    "oversaturation": (1.5, 2.0, 2.6, 3.3, 4.2),
    "resampling": (1.5, 2.0, 2.8, 4.0, 5.5),
}
KINDS = tuple(LEVELS)
#: The five kinds of the embedded default data set.
DEFAULT_SET_KINDS = ("blur", "noise", "jpeg", "contrast", "exposure")
NUM_LEVELS = 5
_LUMA = np.array([0.299, 0.587, 0.114])


def check_kinds(kinds):
    """Validates a list of distortion names; returns it as a tuple."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in LEVELS]
    if unknown or not kinds:
        raise ValueError(f"unknown distortion(s) {unknown or kinds}; choose from {', '.join(KINDS)}")
    return kinds


def _motion_kernel(length, angle):
    size = int(length) | 1
    kernel = np.zeros((size, size))
    centre = size // 2
    t = np.linspace(-centre, centre, 4 * size)
    kernel[np.round(centre + t * np.sin(angle)).astype(int), np.round(centre + t * np.cos(angle)).astype(int)] = 1.0
    return kernel / kernel.sum()


def _to_linear(x):
    return (x / 255.0) ** 2.2


def _from_linear(x):
    return 255.0 * np.clip(x, 0.0, 1.0) ** (1 / 2.2)


def distort(image, kind, level, rng):
    """Applies distortion `kind` at `level` to a uint8 RGB image.

    Args:
        image: uint8 array `(H, W, 3)`.
        kind: str. One of `KINDS`.
        level: int. `0` (unchanged) to `5` (strongest).
        rng: `numpy.random.Generator`, the only source of randomness.

    Returns:
        uint8 array `(H, W, 3)`.
    """
    if kind not in LEVELS:
        raise ValueError(f"unknown distortion {kind!r}; choose from {', '.join(KINDS)}")
    if not 0 <= int(level) <= NUM_LEVELS:
        raise ValueError(f"distortion level must be 0..{NUM_LEVELS}, got {level!r}")
    if level == 0:
        return image
    param = LEVELS[kind][int(level) - 1]
    x = image.astype(np.float64)
    if kind == "blur":
        out = ndimage.gaussian_filter(x, (param, param, 0), mode="reflect")
    elif kind == "noise":
        out = x + rng.normal(0.0, param, x.shape)
    elif kind == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(param))
        out = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), np.float64)
    elif kind == "contrast":
        mean = x.mean(axis=(0, 1), keepdims=True)
        out = mean + (x - mean) * param
    elif kind == "exposure":
        out = 255.0 * (x / 255.0) ** param
    elif kind == "motion_blur":
        kernel = _motion_kernel(param, rng.uniform(0.0, np.pi))
        pad = kernel.shape[0] // 2
        padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        out = np.stack([signal.fftconvolve(padded[:, :, c], kernel, mode="valid") for c in range(3)], axis=-1)
    elif kind == "lowlight_noise":
        # A scene 4x darker, photon-counted with `param` photons at white, amplified back.
        photons = _to_linear(x) * (param / 4.0)
        counted = rng.poisson(photons) + rng.normal(0.0, 0.5, x.shape)
        out = _from_linear(counted * (4.0 / param))
    elif kind in ("overexposure", "underexposure"):
        out = x * param
    elif kind in ("desaturation", "oversaturation"):
        grey = (x @ _LUMA)[:, :, None]
        out = grey + (x - grey) * param
    elif kind == "resampling":
        height, width = image.shape[:2]
        small = Image.fromarray(image).resize((max(1, round(width / param)), max(1, round(height / param))), Image.BILINEAR)
        out = np.asarray(small.resize((width, height), Image.BILINEAR), np.float64)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _ssim_map(x, y):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda a: ndimage.gaussian_filter(a, 1.5, truncate=3.5)  # noqa: E731  (11x11 window)
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))


def ssim(reference, distorted):
    """Mean SSIM of the luminance of two uint8 RGB images (Wang et al. 2004; the default set's label)."""
    x, y = reference.astype(np.float64) @ _LUMA, distorted.astype(np.float64) @ _LUMA
    return float(_ssim_map(x, y)[5:-5, 5:-5].mean())


def colour_ssim(reference, distorted):
    """Mean SSIM over the R, G and B channels: unlike `ssim`, it sees colour changes."""
    x, y = reference.astype(np.float64), distorted.astype(np.float64)
    return float(np.mean([_ssim_map(x[:, :, c], y[:, :, c])[5:-5, 5:-5].mean() for c in range(3)]))
