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

import os
import pathlib

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from keras_adtrs.data.distortions import DEFAULT_SET_KINDS, distort, ssim
from keras_adtrs.data.source import IQASource

VERSION = 1
#: The set's distortions (`keras_adtrs.data.distortions`, levels 1..5).
DISTORTIONS = DEFAULT_SET_KINDS


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


def build_default_arrays(num_references=60, image_size=128, seed=0, progress=None):
    """Builds the set in memory; returns a dict of numpy arrays."""
    images, scores, refs, kinds, levels, names = [], [], [], [], [], []
    for r in range(num_references):
        rng = np.random.default_rng([seed, r])
        reference = make_reference(rng, image_size)
        for kind in DISTORTIONS:
            for level in range(5):
                distorted = distort(reference, kind, level + 1, rng)
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
