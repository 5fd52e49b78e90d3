"""Crops of a decoded image, with the ops the backend uses: TensorFlow's or numpy's.

The crop rules are those of `keras_adtrs.data.crops` (numpy) and
`keras_adtrs.data.crops_tensorflow` (the SavedModel's ops); which one runs is
decided once, by `keras_adtrs.data.backend.uses_tensorflow()`. On the
TensorFlow backend the crops are therefore the exact pixels the SavedModel
scores; on JAX they come from numpy (within 1e-3 after upscaling) and
TensorFlow is never imported.

Example:
>>> crops = image_crops(np.zeros((80, 100, 3), "uint8"), 64, 9)  # doctest: +SKIP
>>> crops.shape  # doctest: +SKIP
(9, 64, 64, 3)
"""

import numpy as np

from keras_adtrs.data import crops as numpy_crops
from keras_adtrs.data.backend import uses_tensorflow


def upscaled_image(image, crop_size):
    """float32 pixels of `image` after the upscaling rule (resized only when a side is below `crop_size`)."""
    if not uses_tensorflow():
        return numpy_crops.upscale(image, crop_size)
    import tensorflow as tf  # the TensorFlow backend: the SavedModel's own ops

    from keras_adtrs.data.crops_tensorflow import upscale

    return upscale(tf.convert_to_tensor(image), crop_size).numpy()


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
    if not uses_tensorflow():
        return numpy_crops.grid_crops(image, crop_size, num_crops)
    import tensorflow as tf  # the TensorFlow backend: the SavedModel's own ops

    from keras_adtrs.data.crops_tensorflow import compiled_grid_crops

    image = tf.convert_to_tensor(image)
    return compiled_grid_crops(int(crop_size), int(num_crops), image.dtype)(image).numpy()


def random_image_crops(image, crop_size, num_crops, seed=0, key=0):
    """Seeded random crops (with random horizontal flips, as in training) of a uint8 image.

    Stateless: the crops depend only on `(seed, key, crop number)`, so the
    same image under the same key gets the same crops on every run and in
    any batch. TensorFlow's stateless RNG draws them on the TensorFlow
    backend, numpy's otherwise (the same rules, other draws).

    Args:
        image: uint8 array `(H, W, 3)`; upscaled first when a side is below
            `crop_size`.
        crop_size: int. Crop side.
        num_crops: int. Number of crops (at least 1).
        seed: int. Run seed. Defaults to `0`.
        key: int. Per-image key (for instance its index in the data set).
            Defaults to `0`.

    Returns:
        float32 numpy array `(num_crops, crop_size, crop_size, 3)`.
    """
    if num_crops < 1:
        raise ValueError(f"num_crops must be at least 1, got {num_crops}")
    if not uses_tensorflow():
        upscaled = numpy_crops.upscale(image, crop_size)
        return np.stack([
            numpy_crops.random_crop(upscaled, crop_size, np.random.default_rng([int(seed), int(key), k]))
            for k in range(num_crops)
        ])
    import tensorflow as tf  # the TensorFlow backend: its stateless RNG, as in training

    from keras_adtrs.data.crops_tensorflow import random_crop, upscale

    upscaled = upscale(tf.convert_to_tensor(image), crop_size)
    base = tf.constant([int(seed), int(key)], tf.int64)
    crops = [
        random_crop(upscaled, crop_size, seed=tf.random.experimental.stateless_fold_in(base, k))
        for k in range(num_crops)
    ]
    return tf.stack(crops).numpy()
