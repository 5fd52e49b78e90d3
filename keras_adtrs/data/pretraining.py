"""Unlabelled images and the distorted batches that quality-aware pre-training learns from.

No human score is involved. A batch holds `groups` groups of `levels`
crops: one crop of a reference image, once pristine and at `levels - 1`
levels of one distortion kind (`keras_adtrs.data.distortions`), ordered from
best (pristine) to worst. What the model learns from a batch:

- `level`: the distortion level of each crop (0 pristine .. 5), which the
  ranking objective orders within each group;
- `class`: `0` for a pristine crop, else `1 + kind * 5 + level - 1`, the
  target of the type/level classification objective;
- `fr`: the full-reference colour SSIM of the crop against its pristine
  version (`distortions.colour_ssim`), the weak label of the `fr` objective.

Batch `i` is a pure function of `(seed, i)`: any worker order, and a run
resumed at step `i`, see the same batches.

References come from folders of photos (`load_reference_images`; each image
is kept at a few scales, so that crops see detail at several sizes) or from
the default data set's procedural generator with seeds that the default set
does not use (`procedural_references`).
"""

import os
import sys

import keras
import numpy as np
from PIL import Image

from keras_adtrs.data import distortions
from keras_adtrs.data.images import IMAGE_EXTENSIONS, ImageReadError, expand_paths, load_image

#: Seed offset of the procedural references: the default set uses seed 0 with
#: reference numbers 0..59, pre-training draws `[PROCEDURAL_SEED + seed, r]`.
PROCEDURAL_SEED = 1_000_003


def load_reference_images(folders, crop_size, scales=(384, 512, 768), progress=True):
    """Reads every image under `folders` and keeps it at a few scales.

    Each image is resized (bicubic) so that its shorter side is each of
    `scales` that it reaches (a photo's detail at several sizes; a phone
    photo in LIVE-C is about 500 pixels a side). An image smaller than the
    smallest scale is kept once at its own size if its shorter side holds a
    crop with margin, else skipped.

    Args:
        folders: list of folders (searched recursively) or image files.
        crop_size: int. The pre-training crop side.
        scales: tuple of int. Shorter sides to keep.
        progress: bool. Print one line per 20 images on stderr.

    Returns:
        `(images, report)`: a list of uint8 RGB arrays and a dict with
        `files` (used), `skipped` (`{path: reason}`) and `arrays`.

    Raises:
        ValueError: no usable image was found.
    """
    paths = []
    for folder in folders:
        if not os.path.exists(folder):
            raise FileNotFoundError(f"{folder}: no such folder or file")
        paths += expand_paths([folder])
    paths = sorted(set(paths))
    images, used, skipped = [], [], {}
    minimum = crop_size + crop_size // 4
    for count, path in enumerate(paths, start=1):
        try:
            image = load_image(path, decoder="pil")
        except ImageReadError as exc:
            skipped[path] = str(exc)
            continue
        height, width = image.shape[:2]
        short = min(height, width)
        if short < minimum:
            skipped[path] = f"smaller than {minimum} pixels on its shorter side ({width}x{height})"
            continue
        kept = [s for s in scales if s <= short] or [short]
        pil = Image.fromarray(image)
        for side in kept:
            ratio = side / short
            size = (max(minimum, round(width * ratio)), max(minimum, round(height * ratio)))
            images.append(np.asarray(pil.resize(size, Image.BICUBIC)) if side != short else image)
        used.append(path)
        if progress and count % 20 == 0:
            print(f"read {count} of {len(paths)} images", file=sys.stderr, flush=True)
    if not images:
        raise ValueError(
            f"no usable image in {', '.join(map(str, folders))} (looked for {', '.join(IMAGE_EXTENSIONS)}; "
            f"{len(skipped)} skipped)"
        )
    return images, {"files": used, "skipped": skipped, "arrays": len(images)}


def procedural_references(count, seed=0, size=128):
    """`count` procedural references drawn like the default set's, from other seeds."""
    from keras_adtrs.data.synthetic import make_reference

    return [make_reference(np.random.default_rng([PROCEDURAL_SEED + int(seed), r]), size) for r in range(count)]


def num_classes(kinds):
    """Classes of the type/level objective: pristine, then 5 levels per kind."""
    return 1 + distortions.NUM_LEVELS * len(kinds)


class DistortionBatches(keras.utils.PyDataset):
    """Batches `(crops, {"level", "class", "fr"})` of distorted reference crops.

    Args:
        references: list of uint8 RGB arrays (`load_reference_images`).
        crop_size: int.
        kinds: tuple of distortion names (`distortions.KINDS`).
        groups: int. Groups per batch.
        levels: int. Crops per group (the pristine crop plus `levels - 1`
            distinct levels of one kind), 2..6.
        steps: int. Batches in all (the run's length).
        seed: int. Seed of all randomness.
        initial_step: int. First batch (resuming).
        with_fr: bool. Compute the `fr` labels (they cost time). Defaults to
            `True`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`...).
    """

    def __init__(self, references, crop_size, kinds, groups, levels, steps, seed=0, initial_step=0, with_fr=True,
                 **kwargs):
        super().__init__(**kwargs)
        if not 2 <= int(levels) <= distortions.NUM_LEVELS + 1:
            raise ValueError(f"levels per group must be 2..{distortions.NUM_LEVELS + 1}, got {levels}")
        if int(groups) < 1:
            raise ValueError(f"groups per batch must be at least 1, got {groups}")
        self.references = references
        self.crop_size = int(crop_size)
        self.kinds = distortions.check_kinds(kinds)
        self.groups, self.levels = int(groups), int(levels)
        self.steps, self.seed, self.initial_step = int(steps), int(seed), int(initial_step)
        self.with_fr = bool(with_fr)
        # Blur and resampling near a crop's border see the margin around it.
        self.margin = max(8, self.crop_size // 8)

    def __len__(self):
        return max(self.steps - self.initial_step, 0)

    def group(self, step, index):
        """The crops and labels of group `index` of batch `step`."""
        rng = np.random.default_rng([self.seed, step, index])
        image = self.references[int(rng.integers(len(self.references)))]
        crop, margin = self.crop_size, self.margin
        region = min(crop + 2 * margin, image.shape[0], image.shape[1])
        top = int(rng.integers(0, image.shape[0] - region + 1))
        left = int(rng.integers(0, image.shape[1] - region + 1))
        patch = image[top : top + region, left : left + region]
        if rng.integers(2):
            patch = patch[:, ::-1]
        patch = np.ascontiguousarray(patch)
        kind_index = int(rng.integers(len(self.kinds)))
        kind = self.kinds[kind_index]
        chosen = rng.choice(np.arange(1, distortions.NUM_LEVELS + 1), self.levels - 1, replace=False)
        levels = [0] + sorted(int(v) for v in chosen)
        noise_seed = int(rng.integers(2**31))
        offset = (region - crop) // 2
        crops, classes, fr = [], [], []
        for level in levels:
            # One noise pattern and motion direction per group: levels differ in strength only.
            distorted = distortions.distort(patch, kind, level, np.random.default_rng(noise_seed))
            crops.append(distorted[offset : offset + crop, offset : offset + crop])
            classes.append(0 if level == 0 else 1 + kind_index * distortions.NUM_LEVELS + level - 1)
            if self.with_fr:
                fr.append(distortions.colour_ssim(patch, distorted))
        return crops, levels, classes, fr

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        step = self.initial_step + int(index)
        crops, levels, classes, fr = [], [], [], []
        for g in range(self.groups):
            c, lv, cl, f = self.group(step, g)
            crops += c
            levels += lv
            classes += cl
            fr += f or [1.0] * len(lv)
        labels = {
            "level": np.asarray(levels, np.float32),
            "class": np.asarray(classes, np.int32),
            "fr": np.asarray(fr, np.float32),
        }
        return np.stack(crops).astype(np.float32), labels
