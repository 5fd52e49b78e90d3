"""The crop rules in TensorFlow (TensorFlow-only module: tf.data pipelines and the SavedModel).

Implements the rules of `keras_adtrs.data.crops` with TensorFlow ops so the
same code runs eagerly (`keras_adtrs.score`), in tf.data and inside the
exported graph. Decoding is `keras_adtrs.data.images.decode_image_tensor`.
"""

import functools

import tensorflow as tf

from keras_adtrs.data.crops import grid_shape


def upscale(image, crop_size):
    """Applies the upscaling rule; returns float32 pixels in [0, 255]."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    crop = tf.constant(crop_size, tf.int32)
    short = tf.minimum(height, width)
    new_h = tf.where(height <= width, crop, (height * crop + width - 1) // width)
    new_w = tf.where(height <= width, (width * crop + height - 1) // height, crop)
    image = tf.cast(image, tf.float32)
    return tf.cond(
        short >= crop,
        lambda: image,
        lambda: tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear"),
    )


def _spread(index, count, span):
    if count == 1:
        return span // 2
    return (2 * index * span + (count - 1)) // (2 * (count - 1))


def grid_crops(image, crop_size, num_crops):
    """`(num_crops, crop, crop, 3)` float32 crops of the test grid (upscaled first)."""
    image = upscale(image, crop_size)
    shape = tf.shape(image)
    span_h, span_w = shape[0] - crop_size, shape[1] - crop_size
    rows, cols = grid_shape(num_crops)
    crops = []
    for k in range(num_crops):
        r, c = divmod(k, cols)
        top, left = _spread(r, rows, span_h), _spread(c, cols, span_w)
        crops.append(image[top : top + crop_size, left : left + crop_size, :])
    return tf.stack(crops)


@functools.lru_cache(maxsize=None)
def compiled_grid_crops(crop_size, num_crops, dtype=tf.uint8):
    """`grid_crops` as one graph for images of any size: `image -> crops`.

    Eagerly, `grid_crops` runs a few dozen ops one at a time for each image;
    `keras_adtrs.score` cuts every image it scores, so it calls this graph
    instead (the same ops, so the same pixels). One graph per crop size,
    crop count and pixel type.
    """
    signature = [tf.TensorSpec((None, None, None), tf.as_dtype(dtype))]
    return tf.function(lambda image: grid_crops(image, crop_size, num_crops), input_signature=signature)


def random_crop(image, crop_size, seed=None):
    """One random `crop x crop` float32 crop (upscaled first) with a random horizontal flip.

    `seed` is a stateless seed `[2]` (int32/int64) so tf.data runs are repeatable.
    """
    image = upscale(image, crop_size)
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    crop = tf.image.stateless_random_crop(image, [crop_size, crop_size, 3], seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(crop, seed=seeds[1])
