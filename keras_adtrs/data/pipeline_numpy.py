"""Input pipeline without TensorFlow: numpy crops in a `keras.utils.PyDataset`.

For the JAX (and any non-TensorFlow) backend. It follows the rules of the
tf.data pipeline (`keras_adtrs.data.pipeline_tensorflow`):

- decoding to uint8 RGB by `keras_adtrs.data.images.load_image` (Pillow
  unless TensorFlow is already imported: JPEG pixels may differ from
  TensorFlow's by a few levels, PNG/BMP decode identically);
- upscaling of images whose shorter side is below the crop size and the crop
  rules of `keras_adtrs.data.crops` (numpy, within 1e-3 of TensorFlow's);
- training: every epoch, `crops_per_image` random crops of every image, each
  with a random horizontal flip, in a random order; incomplete last batch
  dropped. All randomness comes from numpy generators seeded by
  `(seed, epoch)` (order) and `(seed, epoch, image, crop)` (crop), so a run
  is repeatable and epoch `e` is the same whether or not training resumed
  there. It is NOT bit-identical to the tf.data pipeline's stateless RNG:
  the same rules, other draws.
"""

import keras
import numpy as np

from keras_adtrs.data.crops import random_crop, upscale
from keras_adtrs.data.images import load_image

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
        image = load_image(self.images[i], i)
        if min(image.shape[:2]) < self.crop_size:
            image = upscale(image, self.crop_size)  # float32, kept upscaled
        if self.cache:
            self._cache[i] = image
        return image


class TrainingCrops(keras.utils.PyDataset):
    """Training batches `(crops float32 (B, c, c, 3) in [0, 255], scores (B,))`.

    The sequence starts at step `initial_step` of epoch `initial_epoch` and
    covers every later step of every epoch in order, like the tf.data
    pipeline, so pass `steps_per_epoch` to `fit` and each `fit` epoch reads
    the next epoch's batches (a resumed run starts where it stopped). Every
    item depends only on `(seed, epoch, step)`, so any worker order gives
    the same batches.

    Args:
        images: list of uint8 arrays, encoded bytes or file paths.
        scores: array `(N,)`.
        crop_size: int.
        crops_per_image: int. Random crops of each image per epoch.
        batch_size: int.
        seed: int. Seed of all randomness.
        epochs: int. Epochs covered (from `initial_epoch`).
        initial_epoch: int.
        initial_step: int. Step of `initial_epoch` the sequence starts at.
            Defaults to `0`.
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
        initial_step=0,
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
        self.initial_step = int(initial_step)
        self.batches_per_pass = (n * self.crops_per_image) // self.batch_size
        self.steps_per_epoch = int(steps_per_epoch or self.batches_per_pass)
        self._orders = {}

    def __len__(self):
        return max(self.steps_per_epoch * (self.epochs - self.initial_epoch) - self.initial_step, 0)

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
        epoch, step = divmod(int(index) + self.initial_step, self.steps_per_epoch)
        return self.batch(self.initial_epoch + epoch, step)
