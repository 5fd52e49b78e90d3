"""tf.data input pipelines (TensorFlow-only module).

Training: every epoch, `crops_per_image` random crops of every training image
with random horizontal flips, shuffled and batched (incomplete last batch
dropped: the ranking loss needs whole batches). All randomness is stateless
and derived from `(seed, epoch, image, crop)`, so a run is repeatable and
epoch `e` yields the same batches whether or not training was resumed there.
Images are decoded in parallel and, for sets that fit, kept decoded in memory.
"""

import numpy as np
import tensorflow as tf

from keras_adtrs.data.crops_tensorflow import random_crop
from keras_adtrs.data.images import array_to_rgb8, decode_image_tensor

AUTOTUNE = tf.data.AUTOTUNE


def _image_loader(images):
    """`(index -> uint8 image tensor)` for a list of arrays, encoded bytes or paths."""
    first = images[0]
    if isinstance(first, np.ndarray):
        shapes = {im.shape for im in images}
        if len(shapes) == 1 and first.ndim == 3 and first.shape[-1] == 3 and first.dtype == np.uint8:
            stacked = tf.constant(np.stack(images))
            return lambda i: tf.gather(stacked, i)
        encoded = [tf.io.encode_png(array_to_rgb8(im, f"image #{k}")).numpy() for k, im in enumerate(images)]
        return _image_loader(encoded)
    if isinstance(first, (bytes, bytearray)):
        table = tf.constant([bytes(b) for b in images])
        return lambda i: decode_image_tensor(tf.gather(table, i))
    paths = tf.constant([str(p) for p in images])
    return lambda i: decode_image_tensor(tf.io.read_file(tf.gather(paths, i)))


def training_dataset(
    images,
    scores,
    crop_size,
    crops_per_image=1,
    batch_size=8,
    seed=0,
    initial_epoch=0,
    epochs=1,
    shuffle_buffer=2048,
):
    """Batches of `(crops float32 (B, c, c, 3) in [0, 255], scores (B,))`.

    Yields `steps_per_epoch(...)` batches for each epoch from `initial_epoch`
    up to `epochs` (exclusive), in order.

    Args:
        images: list of uint8 arrays, encoded image bytes or file paths.
        scores: array `(N,)` of labels.
        crop_size: int. Crop side.
        crops_per_image: int. Random crops of each image per epoch.
        batch_size: int. Global batch size.
        seed: int. Seed of all randomness.
        initial_epoch, epochs: int. Epoch range to produce.
        shuffle_buffer: int. Crops mixed across images before batching.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no training images")
    if n * crops_per_image < batch_size:
        raise ValueError(
            f"{n} training images x {crops_per_image} crops give fewer crops than one batch of {batch_size}"
        )
    load = _image_loader(images)
    labels = tf.constant(np.asarray(scores, np.float32))
    seed = int(seed)
    k = int(crops_per_image)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )

        def crops_of(i):
            image = load(i)
            crops = [
                random_crop(image, crop_size, seed=tf.stack([tf.constant(seed, tf.int64), (epoch * n + i) * k + j]))
                for j in range(k)
            ]
            return tf.stack(crops), tf.fill([k], tf.gather(labels, i))

        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(crops_of, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()
        ds = ds.shuffle(min(shuffle_buffer, n * k), seed=seed * 7919 + 1, reshuffle_each_iteration=False)
        # The shuffle seed is fixed, the order of the elements changes with the epoch.
        return ds.batch(batch_size, drop_remainder=True)

    epochs_ds = tf.data.Dataset.range(initial_epoch, epochs)
    return epochs_ds.flat_map(one_epoch).prefetch(AUTOTUNE)


def steps_per_epoch(num_images, crops_per_image, batch_size):
    """Whole batches per epoch."""
    return (num_images * crops_per_image) // batch_size
