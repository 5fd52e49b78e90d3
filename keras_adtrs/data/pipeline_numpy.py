"""Input pipeline without TensorFlow: PIL decoding, numpy crops, a `keras.utils.PyDataset`.

For the JAX (and any non-TensorFlow) backend. It follows the rules of the
tf.data pipeline (`keras_adtrs.data.pipeline_tensorflow`, `keras_adtrs.data.crops`):

- decoding to uint8 RGB: grayscale replicated, alpha dropped, 16-bit scaled
  to 8 bits (`value >> 8`), GIF first frame, no EXIF rotation (as
  `tf.io.decode_image`). PIL's and TensorFlow's JPEG decoders may differ by
  a few levels on some pixels (IDCT/upsampling implementation details);
  PNG/BMP decode identically.
- upscaling of images whose shorter side is below the crop size: bilinear,
  half-pixel centres, no antialiasing (`tf.image.resize`'s default),
  implemented in numpy (`resize_bilinear`, within 1e-3 of TensorFlow's).
- training: every epoch, `crops_per_image` random crops of every image, each
  with a random horizontal flip, in a random order; incomplete last batch
  dropped. All randomness comes from numpy generators seeded by
  `(seed, epoch)` (order) and `(seed, epoch, image, crop)` (crop), so a run
  is repeatable and epoch `e` is the same whether or not training resumed
  there. It is NOT bit-identical to the tf.data pipeline's stateless RNG:
  the same rules, other draws.
- test: the deterministic crop grid of `keras_adtrs.data.crops` (identical
  pixels to the TensorFlow grid up to decoding differences).
"""

import io
import math
import os

import numpy as np

from keras_adtrs.data.crops import grid_offsets, upscaled_shape

# ---------------------------------------------------------------- decoding
def decode_image_bytes(data, name="image"):
    """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> uint8 RGB `(H, W, 3)` with PIL."""
    from PIL import Image

    from keras_adtrs.inference.scoring import ImageReadError, array_to_rgb8

    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            image.seek(0)
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                array = np.asarray(image).astype(np.int64)
                return array_to_rgb8(np.clip(array, 0, 65535).astype(np.uint16), name)
            if mode == "F":
                return array_to_rgb8(np.asarray(image), name)
            if mode != "RGB":
                image = image.convert("RGB")  # L, P, RGBA, LA, CMYK...: alpha dropped
            array = np.asarray(image, dtype=np.uint8)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 (PIL raises many types)
        raise ImageReadError(f"{name}: not a decodable image ({exc})") from None
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageReadError(f"{name}: decodes to an empty image {array.shape}")
    return np.ascontiguousarray(array)


def load_image_numpy(source, index=0):
    """A path, encoded bytes or array -> uint8 RGB `(H, W, 3)` (no TensorFlow)."""
    from keras_adtrs.inference.scoring import ImageReadError, array_to_rgb8

    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ImageReadError(f"{name}: cannot read file ({exc.strerror or exc})") from None
        if not data:
            raise ImageReadError(f"{name}: file is empty")
        return decode_image_bytes(data, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image_bytes(source, f"image #{index}")
    return array_to_rgb8(np.asarray(source), f"image #{index}")


# ---------------------------------------------------------------- geometry
def resize_bilinear(image, height, width):
    """Bilinear resize with half-pixel centres, no antialiasing (float32 out).

    Matches `tf.image.resize(image, (height, width), "bilinear")`.
    """
    image = np.asarray(image, dtype=np.float32)
    in_h, in_w = image.shape[:2]

    def axis(out_size, in_size):
        scale = np.float32(in_size) / np.float32(out_size)
        pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        low = np.floor(pos)
        frac = (pos - low).astype(np.float32)
        low_i = np.clip(low.astype(np.int64), 0, in_size - 1)
        high_i = np.clip(np.ceil(pos).astype(np.int64), 0, in_size - 1)
        return low_i, high_i, frac

    y0, y1, fy = axis(height, in_h)
    x0, x1, fx = axis(width, in_w)
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx[None, :, None]
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx[None, :, None]
    return (top + (bottom - top) * fy[:, None, None]).astype(np.float32)


def upscale(image, crop_size):
    """The upscaling rule: float32 pixels, resized only when a side is below `crop_size`."""
    height, width = image.shape[:2]
    new_h, new_w = upscaled_shape(height, width, crop_size)
    if (new_h, new_w) == (height, width):
        return np.asarray(image, dtype=np.float32)
    return resize_bilinear(image, new_h, new_w)


def grid_crops(image, crop_size, num_crops):
    """`(num_crops, crop, crop, 3)` float32 crops of the deterministic test grid."""
    image = upscale(image, crop_size)
    height, width = image.shape[:2]
    return np.stack(
        [image[t : t + crop_size, l : l + crop_size, :] for t, l in grid_offsets(height, width, crop_size, num_crops)]
    ).astype(np.float32)


def random_crop(image, crop_size, rng):
    """One random crop (float32) with a random horizontal flip, drawn from `rng`.

    `image` must already be upscaled (see `upscale`).
    """
    height, width = image.shape[:2]
    top = int(rng.integers(0, height - crop_size + 1))
    left = int(rng.integers(0, width - crop_size + 1))
    crop = image[top : top + crop_size, left : left + crop_size, :]
    if rng.integers(0, 2):
        crop = crop[:, ::-1, :]
    return np.asarray(crop, dtype=np.float32)


def _rng(*keys):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in keys])))


# ---------------------------------------------------------------- datasets
class _ImageStore:
    """Decoded (and, when needed, upscaled) images, decoded once and cached."""

    def __init__(self, images, crop_size, cache=True):
        self.images = list(images)
        self.crop_size = crop_size
        self.cache = cache
        self._cache = {}

    def __len__(self):
        return len(self.images)

    def get(self, i):
        if i in self._cache:
            return self._cache[i]
        image = load_image_numpy(self.images[i], i)
        if min(image.shape[:2]) < self.crop_size:
            image = upscale(image, self.crop_size)  # float32, kept upscaled
        if self.cache:
            self._cache[i] = image
        return image


def _pydataset_base():
    import keras

    return keras.utils.PyDataset


class TrainingCrops(_pydataset_base()):
    """Training batches `(crops float32 (B, c, c, 3) in [0, 255], scores (B,))`.

    Item `i` is step `i % steps_per_epoch` of epoch `initial_epoch + i //
    steps_per_epoch`: the sequence covers every epoch in order, like the
    tf.data pipeline, so pass `steps_per_epoch` to `fit` and each `fit`
    epoch reads the next epoch's batches. Every item depends only on
    `(seed, epoch, step)`, so any worker order gives the same batches.

    Args:
        images: list of uint8 arrays, encoded bytes or file paths.
        scores: array `(N,)`.
        crop_size: int.
        crops_per_image: int. Random crops of each image per epoch.
        batch_size: int.
        seed: int. Seed of all randomness.
        epochs: int. Epochs covered (from `initial_epoch`).
        initial_epoch: int.
        steps_per_epoch: int or None. Batches per epoch; defaults to the
            whole batches of one pass (`N * crops_per_image // batch_size`).
            A larger value wraps around to the next pass of the same epoch.
        cache: bool. Keep decoded images in memory. Defaults to `True`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`,
            `use_multiprocessing`, `max_queue_size`).
    """

    def __init__(
        self,
        images,
        scores,
        crop_size,
        crops_per_image=1,
        batch_size=8,
        seed=0,
        epochs=1,
        initial_epoch=0,
        steps_per_epoch=None,
        cache=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        n = len(images)
        if n == 0:
            raise ValueError("no training images")
        if n * crops_per_image < batch_size:
            raise ValueError(
                f"{n} training images x {crops_per_image} crops give fewer crops than one batch of {batch_size}"
            )
        self.store = _ImageStore(images, crop_size, cache=cache)
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.crop_size = int(crop_size)
        self.crops_per_image = int(crops_per_image)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epochs = int(epochs)
        self.initial_epoch = int(initial_epoch)
        self.batches_per_pass = (n * self.crops_per_image) // self.batch_size
        self.steps_per_epoch = int(steps_per_epoch or self.batches_per_pass)
        self._orders = {}

    def __len__(self):
        return self.steps_per_epoch * max(self.epochs - self.initial_epoch, 0)

    def _order(self, epoch, repeat):
        key = (epoch, repeat)
        if key not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            total = len(self.store) * self.crops_per_image
            self._orders[key] = _rng(self.seed, epoch, repeat, 0x5EED).permutation(total)
        return self._orders[key]

    def batch(self, epoch, step):
        """The `step`-th batch of epoch `epoch` (independent of any state)."""
        repeat, step_in_pass = divmod(step, self.batches_per_pass)
        order = self._order(epoch, repeat)
        picks = order[step_in_pass * self.batch_size : (step_in_pass + 1) * self.batch_size]
        n, k = len(self.store), self.crops_per_image
        crops, labels = [], []
        for flat in picks:
            i, j = divmod(int(flat), k)
            rng = _rng(self.seed, epoch, repeat, (epoch * n + i) * k + j)
            image = self.store.get(i)
            crops.append(random_crop(image, self.crop_size, rng))
            labels.append(self.scores[i])
        return np.stack(crops), np.asarray(labels, np.float32)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        epoch, step = divmod(int(index), self.steps_per_epoch)
        return self.batch(self.initial_epoch + epoch, step)


class GridCrops(_pydataset_base()):
    """Test-grid crops of every image, `num_crops` per image, in image order.

    Item `i` holds the crops of `images_per_batch` images, shape
    `(images_per_batch * num_crops, c, c, 3)`; `predict` on it and
    `reshape(-1, num_crops).mean(1)` gives one score per image.
    """

    def __init__(self, images, crop_size, num_crops=9, images_per_batch=4, cache=False, **kwargs):
        super().__init__(**kwargs)
        self.store = _ImageStore(images, crop_size, cache=cache)
        self.crop_size = int(crop_size)
        self.num_crops = int(num_crops)
        self.images_per_batch = int(images_per_batch)

    def __len__(self):
        return math.ceil(len(self.store) / self.images_per_batch)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.images_per_batch
        stop = min(start + self.images_per_batch, len(self.store))
        return (np.concatenate([grid_crops(self.store.get(i), self.crop_size, self.num_crops) for i in range(start, stop)]),)


def all_grid_crops(images, crop_size, num_crops):
    """`(N, num_crops, c, c, 3)` float32 grid crops of a list of images."""
    return np.stack([grid_crops(load_image_numpy(im, i), crop_size, num_crops) for i, im in enumerate(images)])


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
