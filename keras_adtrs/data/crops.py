"""The crop rules shared by training, `predict`, `score` and the SavedModel, in numpy.

The offsets are pure integer arithmetic, so the numpy implementation here and
the TensorFlow one in `keras_adtrs.data.crops_tensorflow` give the same
pixels (the bilinear upscaling within 1e-3):

- Upscaling: an image whose shorter side is below the crop size is resized
  (bilinear, half-pixel centres, no antialiasing: `tf.image.resize`'s
  default) so that its shorter side equals the crop size, keeping the aspect
  ratio (the longer side is rounded up). Larger images are never resized.
- Test grid: `n` crops on a `rows x cols` grid, `cols = ceil(sqrt(n))`,
  `rows = ceil(n / cols)`, taken row-major; offsets spread evenly from the
  first to the last possible position (rounded half up); a single row or
  column is centred. The image's score is the mean over its crops.
"""

import math

import numpy as np


def upscaled_shape(height, width, crop_size):
    """`(height, width)` after the upscaling rule (unchanged if big enough)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image has an empty side: {height}x{width}")
    if min(height, width) >= crop_size:
        return height, width
    if height <= width:
        return crop_size, (width * crop_size + height - 1) // height
    return (height * crop_size + width - 1) // width, crop_size


def grid_shape(num_crops):
    """`(rows, cols)` of the test grid for `num_crops` crops."""
    if num_crops < 1:
        raise ValueError(f"need at least one crop, got {num_crops}")
    cols = math.ceil(math.sqrt(num_crops))
    rows = math.ceil(num_crops / cols)
    return rows, cols


def _spread(index, count, span):
    # Offset of grid line `index` out of `count` over `span` free pixels.
    if count == 1:
        return span // 2
    return (2 * index * span + (count - 1)) // (2 * (count - 1))


def grid_offsets(height, width, crop_size, num_crops):
    """List of `(top, left)` for the deterministic test grid on an (upscaled) image."""
    rows, cols = grid_shape(num_crops)
    span_h, span_w = height - crop_size, width - crop_size
    if span_h < 0 or span_w < 0:
        raise ValueError(f"image {height}x{width} is smaller than the crop {crop_size}")
    offsets = []
    for k in range(num_crops):
        r, c = divmod(k, cols)
        offsets.append((_spread(r, rows, span_h), _spread(c, cols, span_w)))
    return offsets


def dense_positions(span, stride):
    """Offsets along one side for the dense grid of a quality map.

    `ceil(span / stride) + 1` offsets spread from `0` to `span` with the test
    grid's rounding (`grid_offsets`), so neighbours are at most `stride`
    apart and, with `stride <= crop`, the crops cover every pixel. A
    `k x k` dense grid therefore takes the same crops as the test grid of
    `k * k` crops.

    Args:
        span: int. Free pixels on the side: `side - crop_size` (>= 0).
        stride: int. Largest distance between neighbouring crops (>= 1).

    Returns:
        list of int, increasing, first `0` and last `span`.

    Example:
    >>> dense_positions(36, 20)
    [0, 18, 36]
    """
    if span < 0:
        raise ValueError(f"span must be at least 0, got {span}")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    count = -(-span // stride) + 1
    if count == 1:
        return [0]
    return [_spread(i, count, span) for i in range(count)]


# ------------------------------------------------------ numpy implementation
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
