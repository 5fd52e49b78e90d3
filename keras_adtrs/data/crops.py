"""The crop rules shared by training, `predict`, `score` and the SavedModel.

Pure integer arithmetic, so the numpy rule here and the TensorFlow one in
`keras_adtrs.data.crops_tensorflow` give the same pixels:

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
