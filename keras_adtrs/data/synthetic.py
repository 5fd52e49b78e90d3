"""The embedded default data set: procedural references, graded distortions, SSIM labels.

No download, no licence: reference images are generated from a seed
(smooth colour fields, gratings, band-limited noise textures, hard-edged
shapes), each distorted by five types at five levels (Gaussian blur, white
noise, JPEG, contrast loss and exposure shift), and labelled by the
full-reference SSIM of the pair (on luminance, 11x11 Gaussian window,
sigma 1.5), mapped to 0-100 (`100 * SSIM`, clipped). Higher is better. The
build is deterministic from its seed and cached as an .npz file after the
first build; the split unit is the reference image.
"""

import io
import os
import pathlib

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from keras_adtrs.data.source import IQASource

VERSION = 1
DISTORTIONS = ("blur", "noise", "jpeg", "contrast", "exposure")
LEVELS = {
    "blur": (0.6, 1.0, 1.6, 2.4, 3.6),  # Gaussian sigma, pixels
    "noise": (4.0, 8.0, 14.0, 22.0, 34.0),  # white-noise sigma, 0-255 units
    "jpeg": (50, 30, 18, 10, 5),  # PIL JPEG quality
    "contrast": (0.8, 0.62, 0.46, 0.32, 0.2),  # contrast kept around the mean
    "exposure": (1.25, 1.55, 1.9, 2.4, 3.0),  # gamma applied to [0, 1] intensities
}


def default_cache_dir():
    root = os.environ.get("KERAS_ADTRS_DATA_DIR") or os.path.join(pathlib.Path.home(), ".keras_adtrs")
    return os.path.join(root, "datasets")


def _smooth_field(rng, size, scale):
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), scale, mode="wrap")
    field -= field.min()
    return field / (field.max() + 1e-9)


def make_reference(rng, size=128):
    """One procedural RGB reference image, uint8 `(size, size, 3)`."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    base_colour = rng.uniform(0.2, 0.8, 3)
    image = np.empty((size, size, 3))
    for c in range(3):  # smooth colour field
        image[:, :, c] = base_colour[c] + 0.35 * (_smooth_field(rng, size, size / 6) - 0.5)
    for _ in range(rng.integers(1, 4)):  # gratings
        freq = rng.uniform(4, 28)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.05, 0.2)
        mask = _smooth_field(rng, size, size / 8) > rng.uniform(0.3, 0.7)
        wave = amp * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        image += (wave * mask)[:, :, None] * rng.uniform(0.5, 1.0, 3)
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(0.6, 2.0))
    image += (rng.uniform(0.03, 0.12) * texture / (texture.std() + 1e-9))[:, :, None]
    for _ in range(rng.integers(2, 7)):  # hard-edged shapes
        colour = rng.uniform(0, 1, 3)
        cy, cx = rng.uniform(0, 1, 2)
        r = rng.uniform(0.05, 0.3)
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        else:
            mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < rng.uniform(0.05, 0.3))
        image[mask] = 0.3 * image[mask] + 0.7 * colour
    return np.clip(image * 255.0, 0, 255).round().astype(np.uint8)


def distort(image, kind, level, rng):
    """Applies distortion `kind` at `level` (0-4) to a uint8 RGB image."""
    x = image.astype(np.float64)
    param = LEVELS[kind][level]
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
    else:
        raise ValueError(f"unknown distortion {kind!r}")
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _luminance(image):
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def ssim(reference, distorted):
    """Mean SSIM of the luminance of two uint8 RGB images (Wang et al. 2004)."""
    x, y = _luminance(reference), _luminance(distorted)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda a: ndimage.gaussian_filter(a, 1.5, truncate=3.5)  # noqa: E731  (11x11 window)
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim_map[5:-5, 5:-5].mean())


def build_default_arrays(num_references=60, image_size=128, seed=0, progress=None):
    """Builds the set in memory; returns a dict of numpy arrays."""
    images, scores, refs, kinds, levels, names = [], [], [], [], [], []
    for r in range(num_references):
        rng = np.random.default_rng([seed, r])
        reference = make_reference(rng, image_size)
        for kind in DISTORTIONS:
            for level in range(5):
                distorted = distort(reference, kind, level, rng)
                images.append(distorted)
                scores.append(float(np.clip(100.0 * ssim(reference, distorted), 0.0, 100.0)))
                refs.append(r)
                kinds.append(kind)
                levels.append(level + 1)
                names.append(f"ref{r:03d}_{kind}_{level + 1}.png")
        if progress is not None:
            progress(r + 1, num_references)
    return {
        "images": np.stack(images),
        "scores": np.array(scores, np.float32),
        "reference": np.array(refs, np.int32),
        "distortion": np.array(kinds),
        "level": np.array(levels, np.int32),
        "file_name": np.array(names),
    }


def load_default_source(data_dir=None, seed=0, num_references=60, image_size=128, verbose=True):
    """The default set as an `IQASource`, built once and cached under `data_dir`.

    Args:
        data_dir: str or None. Cache folder. Defaults to
            `$KERAS_ADTRS_DATA_DIR/datasets` or `~/.keras_adtrs/datasets`.
        seed: int. Seed of the whole build. Defaults to `0`.
        num_references: int. Reference images (25 distorted versions each).
            Defaults to `60` (1500 images).
        image_size: int. Square image side. Defaults to `128`.
        verbose: bool. Print progress while building. Defaults to `True`.
    """
    data_dir = data_dir or default_cache_dir()
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(
        data_dir, f"adtrs_default_v{VERSION}_seed{seed}_refs{num_references}_size{image_size}.npz"
    )
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    else:
        progress = None
        if verbose:
            bar = tqdm(total=num_references, desc="building default data set", unit="ref", leave=False)
            progress = lambda done, total: bar.update(1)  # noqa: E731
        arrays = build_default_arrays(num_references, image_size, seed, progress)
        if verbose:
            bar.close()
        tmp = path + f".tmp-{os.getpid()}.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    return IQASource(
        name="default",
        images=list(arrays["images"]),
        scores=arrays["scores"],
        groups=arrays["reference"],
        names=[str(n) for n in arrays["file_name"]],
        higher_is_better=True,
        score_range=(0.0, 100.0),
        metadata={
            "distortion": [str(d) for d in arrays["distortion"]],
            "level": arrays["level"],
            "cache_file": path,
            "label": "100 * SSIM(reference, distorted) on luminance",
            "seed": seed,
        },
    )
