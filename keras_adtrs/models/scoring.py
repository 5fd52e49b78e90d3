"""Score whole images: decode, upscale if small, crop grid, mean over crops; the one crops-to-scores loop.

`CropScorer` is the only loop in the package that turns crops into model
calls and per-image means. Everything that scores uses it: `score` and
`score_files` (test parts, `predict`, `evaluate`), the per-epoch validation
of a training run (`keras_adtrs.training.callbacks`), quality maps
(`keras_adtrs.inference.quality_map`) and the deployment checks.

The same rules as the SavedModel's `serving_default` (`keras_adtrs.data.crops`,
`keras_adtrs.data.crops_tensorflow`), so `score` and TF Serving agree.
Images are decoded by `keras_adtrs.data.images` and cropped by
`keras_adtrs.data.image_crops`: on the TensorFlow backend with TensorFlow's
ops, as in the SavedModel; on JAX with Pillow and numpy, and TensorFlow is
never imported.

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

from keras_adtrs.data.image_crops import image_crops, random_image_crops
from keras_adtrs.data.images import ImageReadError, load_image
from keras_adtrs.defaults import CONSTANT_WEIGHTS_MIN_CROPS, CROP_MODES, SCORE_BATCH_SIZE, TEST_CROPS
from keras_adtrs.errors import SettingError
from keras_adtrs.reporting import score_value


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
        raise SettingError("batch_size", f"must be a positive integer, got {batch_size!r}")
    sizes = []
    size = 1
    while size < batch_size:
        sizes.append(size)
        size *= 2
    return tuple(sizes) + (int(batch_size),)


def bucket_size(count, batch_size):
    """The smallest of `bucket_sizes(batch_size)` holding `count` crops."""
    return next(size for size in bucket_sizes(batch_size) if size >= count)


class CropScorer:
    """Scores queued crops in forward calls of `batch_size` crops (the last padded to a bucket size).

    `add(owner, crops)` queues one image's crops and returns the `(owner,
    mean score)` pairs completed so far; `finish()` scores the rest. An
    image's crop scores are summed in a fixed order, so its score does not
    depend on which other images share its calls.

    Args:
        model: a model with `predict_on_batch(crops) -> (B,) or (B, 1)`
            (a Keras model, or an artifact of `keras_adtrs.serving.runtimes`).
        batch_size: int. Crops per forward call.
        predict: callable or None. `predict(crops) -> scores` instead of
            `model.predict_on_batch` (the multi-worker training loop calls
            the model directly). Defaults to None.
    """

    def __init__(self, model, batch_size=SCORE_BATCH_SIZE, predict=None):
        bucket_sizes(batch_size)  # validates
        self.model = model
        self.predict = predict or model.predict_on_batch
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
        out = np.asarray(self.predict(batch), np.float64).reshape(-1)[:count]
        done = []
        for owner, value in zip(owners[:count].tolist(), out.tolist()):
            self.sums[owner] += value  # crops of an image always summed in the same order
            self.remaining[owner] -= 1
            if self.remaining[owner] == 0:
                done.append((owner, self.sums.pop(owner) / self.counts.pop(owner)))
                del self.remaining[owner]
        return done


def score_crop_sets(model, crop_sets, batch_size=SCORE_BATCH_SIZE, predict=None):
    """The mean model score of each set of crops, in order (one set per image, or one crop per set).

    Args:
        model: see `CropScorer`.
        crop_sets: iterable of float32 arrays `(n_i, c, c, 3)`.
        batch_size: int. Crops per forward call.
        predict: see `CropScorer`.

    Returns:
        float64 numpy array, one mean per set.
    """
    scorer = CropScorer(model, batch_size, predict)
    means = {}
    count = 0
    for index, crops in enumerate(crop_sets):
        means.update(scorer.add(index, crops))
        count += 1
    means.update(scorer.finish())
    return np.array([means[i] for i in range(count)], np.float64)


def _use_constant_weights_for(model, crop_count):
    """Before a job of `crop_count` crops: large jobs run an inference copy with constant weights.

    See `ADTRSModel.use_constant_weights` (TensorFlow, inference copies only;
    other models are left as they are).
    """
    if crop_count >= CONSTANT_WEIGHTS_MIN_CROPS and hasattr(model, "use_constant_weights"):
        model.use_constant_weights()


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
    if crop_mode not in CROP_MODES:
        raise SettingError("crop_mode", f"must be one of {', '.join(CROP_MODES)}, got {crop_mode!r}")
    if int(crops) < 1:
        raise SettingError("crops", f"must be at least 1, got {crops}")
    crop_size = model_crop_size(model)
    _use_constant_weights_for(model, len(images) * int(crops))
    results = np.full(len(images), np.nan, np.float64)
    errors = {}
    scorer = CropScorer(model, batch_size)
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


def score(model, images, crops=TEST_CROPS, batch_size=SCORE_BATCH_SIZE, crop_mode="grid", seed=0, keys=None,
          progress=False):
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


def score_files(model, paths, crops=TEST_CROPS, batch_size=SCORE_BATCH_SIZE, progress=False):
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
