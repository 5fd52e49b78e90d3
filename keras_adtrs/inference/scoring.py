"""Score whole images: decode, upscale if small, crop grid, mean over crops.

The same rules as the SavedModel's `serving_default` (`keras_adtrs.data.crops`,
`keras_adtrs.data.crops_tensorflow`), so `score` and TF Serving agree.
Images are decoded by `keras_adtrs.data.images`. When TensorFlow is in use
(Keras on the TensorFlow backend) decoding and crops run in TensorFlow, as in
the SavedModel; otherwise (the JAX backend) in Pillow and numpy, and
TensorFlow is never imported.

Scores do not depend on batch composition: each crop is scored on its own
(BatchNorm in inference mode) and an image's crops are averaged in a fixed
order. Forward calls hold `batch_size` crops; the last one is padded with
blank crops (thrown away) up to the next bucket size, a power of two below
`batch_size` or `batch_size` itself (`bucket_sizes`), so that a handful of
crops costs a small call while the model sees only a few shapes. The same
image therefore scores the same alone, in a batch, in another order or on
another run, up to float rounding between bucket sizes (the tests hold it
within 1e-5 of the scores' range).
"""

import os
import sys

import numpy as np
from tqdm.auto import tqdm

from keras_adtrs.data import crops as numpy_crops
from keras_adtrs.data.images import ImageReadError, default_decoder, load_image
from keras_adtrs.data.pipeline_numpy import all_grid_crops
from keras_adtrs.reporting import score_value


def _tensorflow_in_use():
    return default_decoder() == "tensorflow"


def image_crops(image, crop_size, num_crops):
    """The deterministic test grid of crops of a uint8 image.

    Args:
        image: uint8 array `(H, W, 3)`; upscaled first when a side is below
            `crop_size`.
        crop_size: int. Crop side.
        num_crops: int. Number of grid crops.

    Returns:
        float32 numpy array `(num_crops, crop_size, crop_size, 3)`.
    """
    if not _tensorflow_in_use():
        return numpy_crops.grid_crops(image, crop_size, num_crops)
    import tensorflow as tf  # TensorFlow already imported: the SavedModel's own ops

    from keras_adtrs.data.crops_tensorflow import grid_crops

    return grid_crops(tf.convert_to_tensor(image), crop_size, num_crops).numpy()


def random_image_crops(image, crop_size, num_crops, seed=0, key=0):
    """Seeded random crops (with random horizontal flips, as in training) of a uint8 image.

    Stateless: the crops depend only on `(seed, key, crop number)`, so the
    same image under the same key gets the same crops on every run and in
    any batch. TensorFlow's stateless RNG draws them when TensorFlow is in
    use, numpy's otherwise (the same rules, other draws).

    Args:
        image: uint8 array `(H, W, 3)`; upscaled first when a side is below
            `crop_size`.
        crop_size: int. Crop side.
        num_crops: int. Number of crops.
        seed: int. Run seed. Defaults to `0`.
        key: int. Per-image key (for instance its index in the data set).
            Defaults to `0`.

    Returns:
        float32 numpy array `(num_crops, crop_size, crop_size, 3)`.
    """
    if num_crops < 1:
        raise ValueError(f"need at least one crop, got {num_crops}")
    if not _tensorflow_in_use():
        upscaled = numpy_crops.upscale(image, crop_size)
        return np.stack([
            numpy_crops.random_crop(upscaled, crop_size, np.random.default_rng([int(seed), int(key), k]))
            for k in range(num_crops)
        ])
    import tensorflow as tf  # TensorFlow already imported: its stateless RNG, as in training

    from keras_adtrs.data.crops_tensorflow import random_crop, upscale

    upscaled = upscale(tf.convert_to_tensor(image), crop_size)
    base = tf.constant([int(seed), int(key)], tf.int64)
    crops = [
        random_crop(upscaled, crop_size, seed=tf.random.experimental.stateless_fold_in(base, k))
        for k in range(num_crops)
    ]
    return tf.stack(crops).numpy()


def model_crop_size(model):
    """The crop side a model takes: `model.crop_size`, else its input shape."""
    size = getattr(model, "crop_size", None)
    if size is None:
        shape = getattr(model, "input_shape", None)
        if isinstance(shape, list):
            shape = shape[0]
        if not shape or shape[1] is None:
            raise ValueError("cannot tell the model's crop size: it has no `crop_size` and no fixed input shape")
        size = shape[1]
    return int(size)


def bucket_sizes(batch_size):
    """The forward-call sizes `score` uses: powers of two below `batch_size`, then `batch_size`.

    Example:
    >>> bucket_sizes(32), bucket_sizes(6)
    ((1, 2, 4, 8, 16, 32), (1, 2, 4, 6))
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    sizes = []
    size = 1
    while size < batch_size:
        sizes.append(size)
        size *= 2
    return tuple(sizes) + (int(batch_size),)


def bucket_size(count, batch_size):
    """The smallest of `bucket_sizes(batch_size)` holding `count` crops."""
    return next(size for size in bucket_sizes(batch_size) if size >= count)


class _CropScorer:
    """Scores queued crops in forward calls of `batch_size` crops (the last padded to a bucket size)."""

    def __init__(self, model, batch_size):
        bucket_sizes(batch_size)  # validates
        self.model = model
        self.batch_size = int(batch_size)
        self.crops, self.owners = [], []
        self.queued = 0
        self.sums, self.counts, self.remaining = {}, {}, {}

    def add(self, owner, crops):
        crops = np.asarray(crops, np.float32)
        self.crops.append(crops)
        self.owners.append(np.full(len(crops), owner, np.int64))
        self.queued += len(crops)
        self.sums[owner] = 0.0
        self.counts[owner] = len(crops)
        self.remaining[owner] = len(crops)
        done = []
        while self.queued >= self.batch_size:
            done += self._run(self.batch_size)
        return done

    def finish(self):
        done = []
        while self.queued:
            done += self._run(min(self.queued, self.batch_size))
        return done

    def _run(self, count):
        crops = np.concatenate(self.crops)
        owners = np.concatenate(self.owners)
        batch, rest = crops[:count], crops[count:]
        self.crops = [rest] if len(rest) else []
        self.owners = [owners[count:]] if len(rest) else []
        self.queued = len(rest)
        size = bucket_size(count, self.batch_size)
        if count < size:  # pad to the bucket: the model sees a few shapes only
            pad = np.zeros((size - count,) + batch.shape[1:], np.float32)
            batch = np.concatenate([batch, pad])
        out = np.asarray(self.model.predict_on_batch(batch), np.float64).reshape(-1)[:count]
        done = []
        for owner, value in zip(owners[:count].tolist(), out.tolist()):
            self.sums[owner] += value  # crops of an image always summed in the same order
            self.remaining[owner] -= 1
            if self.remaining[owner] == 0:
                done.append((owner, self.sums.pop(owner) / self.counts.pop(owner)))
                del self.remaining[owner]
        return done


def _progress(total, enabled, desc):
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="image", desc=desc, leave=False)


def _as_list(images):
    if isinstance(images, (str, bytes, bytearray, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        return [images]
    return list(images)


def _score_each(model, images, crops, batch_size, crop_mode, seed, keys, progress, on_error):
    """Core loop: yields nothing, returns `(scores, errors)` (NaN and message where failed)."""
    if crop_mode not in ("grid", "random"):
        raise ValueError(f"crop_mode must be 'grid' or 'random', got {crop_mode!r}")
    if int(crops) < 1:
        raise ValueError(f"crops must be at least 1, got {crops}")
    crop_size = model_crop_size(model)
    results = np.full(len(images), np.nan, np.float64)
    errors = {}
    scorer = _CropScorer(model, batch_size)
    bar = _progress(len(images), progress, "scoring")
    try:
        for index, source in enumerate(images):
            try:
                image = load_image(source, index)
            except ImageReadError as exc:
                if on_error == "raise":
                    raise
                errors[index] = str(exc)
                bar.update(1)
                continue
            if crop_mode == "grid":
                image_crops_ = image_crops(image, crop_size, int(crops))
            else:
                key = index if keys is None else keys[index]
                image_crops_ = random_image_crops(image, crop_size, int(crops), seed=seed, key=key)
            for owner, value in scorer.add(index, image_crops_):
                results[owner] = value
                bar.update(1)
        for owner, value in scorer.finish():
            results[owner] = value
            bar.update(1)
    finally:
        bar.close()
    return results.astype(np.float32), errors


def score(model, images, crops=9, batch_size=32, crop_mode="grid", seed=0, keys=None, progress=False):
    """Quality score of each image: the mean of the model over its crops.

    Deterministic and independent of batch composition (see the module
    docstring): an image scores the same alone, in a batch, in another order
    and on another run.

    Args:
        model: an `ADTRSModel`, or any Keras model taking `(B, c, c, 3)`
            crops in [0, 255] and returning `(B,)` or `(B, 1)` scores.
        images: a list of file paths, encoded image bytes or numpy arrays
            (uint8, uint16 or float in [0, 255]; grayscale, RGB or RGBA), or
            a single one of those.
        crops: int. Crops per image. Defaults to `9`.
        batch_size: int. Crops per forward call (the last call is padded to
            the next power of two, at most this size). Defaults to `32`.
        crop_mode: str. `"grid"` (the deterministic test grid, as the
            SavedModel) or `"random"` (seeded random crops). Defaults to
            `"grid"`.
        seed: int. Seed of the random crops. Defaults to `0`.
        keys: list of int or None. Per-image keys of the random crops (for
            instance data set indices, so an image gets the same crops in
            any subset); defaults to the list positions.
        progress: bool. Show a progress bar on stderr. Defaults to `False`.

    Returns:
        float32 numpy array `(len(images),)`.

    Raises:
        ImageReadError: an image cannot be read; the message names it.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    >>> keras_adtrs.score(model, [np.zeros((80, 100, 3), "uint8")], crops=4).shape
    (1,)
    """
    images = _as_list(images)
    scores, _ = _score_each(model, images, crops, batch_size, crop_mode, seed, keys, progress, "raise")
    return scores


def score_files(model, paths, crops=9, batch_size=32, progress=False):
    """Scores files one row each; a file that cannot be read gets an error row.

    Args:
        model: see `score`.
        paths: list of file paths (`keras_adtrs.data.images.expand_paths` expands folders and globs).
        crops: int. Grid crops per image. Defaults to `9`.
        batch_size: int. Crops per forward call. Defaults to `32`.
        progress: bool. Show a progress bar on stderr. Defaults to `False`.

    Returns:
        list of dicts in the order of `paths`: `{"path": str, "score": float}`
        or `{"path": str, "error": str}`. `keras_adtrs.reporting.format_rows` prints them.

    Example:
    >>> rows = score_files(model, expand_paths(["photos/"]))  # doctest: +SKIP
    >>> print(keras_adtrs.reporting.format_rows(rows, "table"))  # doctest: +SKIP
    """
    paths = [os.fspath(p) for p in paths]
    scores, errors = _score_each(model, paths, crops, batch_size, "grid", 0, None, progress, "row")
    return [
        {"path": path, "error": errors[i]} if i in errors else {"path": path, "score": score_value(scores[i])}
        for i, path in enumerate(paths)
    ]


def predict_grid_scores(model, images=None, crop_size=None, num_crops=9, batch_size=32, crops=None):
    """One score per image: the mean of the model over its test-grid crops.

    Pass `images` (decoded on the fly) or precomputed `crops` from
    `all_grid_crops`. Uses `model.predict_on_batch` (no TensorFlow).
    """
    if crops is None:
        crop_size = crop_size or model.crop_size
        crops = all_grid_crops(images, crop_size, num_crops)
    count, num_crops = crops.shape[:2]
    if count == 0:
        return np.zeros((0,), np.float64)
    flat = crops.reshape((-1,) + crops.shape[2:])
    out = np.concatenate(
        [np.asarray(model.predict_on_batch(flat[i : i + batch_size])).reshape(-1) for i in range(0, len(flat), batch_size)]
    )
    return out.reshape(count, num_crops).astype(np.float64).mean(axis=1)
