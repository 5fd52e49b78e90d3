"""Quality maps: where in an image the model's crop scores are low or high.

`quality_map(model, image, stride=...)` scores a dense grid of crops and
returns a `QualityMap`; `save_quality_map` writes it as a PNG (the image
under a semi-transparent heat map, a colour bar in score units, the image
score in the title) and as a `.npy` array of the grid.

The rules (the crop rules of `keras_adtrs.data.crops`):

- the image is decoded and, when its shorter side is below the crop size,
  upscaled, exactly as for `keras_adtrs.score`;
- dense grid: along each side of `L` pixels, `ceil((L - crop) / stride) + 1`
  crop offsets spread evenly from `0` to `L - crop` with the test grid's
  rounding (`keras_adtrs.data.crops.dense_positions`), so neighbouring crops
  are at most `stride` pixels apart and every pixel is inside at least one
  crop (`stride <= crop`). A `k x k` dense grid takes the same crops as the
  test grid of `k * k` crops (`keras_adtrs.score(..., crops=k * k)`);
- the grid (`QualityMap.scores`, `(rows, cols)`) holds one score per crop;
  its mean (`QualityMap.score`) is the image score on that grid;
- per-pixel map (`QualityMap.pixel_map()`): each pixel gets the mean score
  of the crops that cover it. Pixels near the border are covered by fewer
  crops than central ones, so the plain mean of the pixel map is not the
  image score; the mean weighted by the number of covering crops
  (`QualityMap.coverage()`) is.

A crop's score describes the whole crop, so the map's resolution is about a
crop, not a pixel: a low value says that the crops over that region score
low, not which pixels make them so.

Example:
>>> qmap = keras_adtrs.quality_map(model, "photo.jpg", stride=56)  # doctest: +SKIP
>>> qmap.scores.shape, qmap.score  # doctest: +SKIP
((6, 8), 54.2)
>>> save_quality_map(qmap, "maps/photo.png")  # doctest: +SKIP
"""

import dataclasses
import os

import numpy as np

from keras_adtrs.data import crops as numpy_crops
from keras_adtrs.data.image_crops import upscaled_image
from keras_adtrs.data.images import load_image
from keras_adtrs.defaults import SCORE_BATCH_SIZE
from keras_adtrs.models.scoring import model_crop_size, score_crop_sets


@dataclasses.dataclass
class QualityMap:
    """The crop scores of a dense grid over one image.

    Attributes:
        scores: float32 array `(rows, cols)`: the score of the crop at
            `(tops[r], lefts[c])`.
        tops: int array `(rows,)`. Crop offsets from the top.
        lefts: int array `(cols,)`. Crop offsets from the left.
        crop_size: int. Crop side.
        stride: int. The largest distance between neighbouring crops.
        image: uint8 array `(H, W, 3)`: the image the crops were taken from
            (upscaled when it was smaller than a crop).
        name: str. The file name, or a description of an unnamed input.
    """

    scores: np.ndarray
    tops: np.ndarray
    lefts: np.ndarray
    crop_size: int
    stride: int
    image: np.ndarray
    name: str = ""

    @property
    def score(self):
        """The image score on this grid: the mean of the crop scores (float)."""
        return float(np.mean(self.scores, dtype=np.float64))

    def _covers(self):
        height, width = self.image.shape[:2]
        rows = (np.arange(height)[:, None] >= self.tops[None, :]) & (
            np.arange(height)[:, None] < self.tops[None, :] + self.crop_size
        )
        cols = (np.arange(width)[:, None] >= self.lefts[None, :]) & (
            np.arange(width)[:, None] < self.lefts[None, :] + self.crop_size
        )
        return rows.astype(np.float64), cols.astype(np.float64)

    def coverage(self):
        """int array `(H, W)`: how many crops of the grid cover each pixel (at least 1)."""
        rows, cols = self._covers()
        return np.outer(rows.sum(axis=1), cols.sum(axis=1)).astype(np.int64)

    def pixel_map(self):
        """float32 array `(H, W)`: each pixel's mean over the crops that cover it."""
        rows, cols = self._covers()
        sums = rows @ self.scores.astype(np.float64) @ cols.T
        return (sums / np.outer(rows.sum(axis=1), cols.sum(axis=1))).astype(np.float32)


def quality_map(model, image, stride=None, batch_size=SCORE_BATCH_SIZE):
    """Scores a dense grid of crops over an image (the module docstring gives the rules).

    Args:
        model: an `ADTRSModel`, any Keras model taking `(B, c, c, 3)` crops
            in [0, 255], or a LiteRT/ONNX artifact from
            `keras_adtrs.serving.runtimes.load_artifact`.
        image: a file path, encoded image bytes or a pixel array (as
            `keras_adtrs.score` takes).
        stride: int or None. The largest distance between neighbouring crops,
            from 1 to the crop size. Defaults to a quarter of the crop size.
        batch_size: int. Crops per forward call. Defaults to `32`.

    Returns:
        `QualityMap`.

    Raises:
        ImageReadError: the image cannot be read; the message names it.
        ValueError: `stride` is not from 1 to the crop size.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    >>> qmap = keras_adtrs.quality_map(model, np.zeros((100, 100, 3), "uint8"), stride=20)
    >>> qmap.scores.shape
    (3, 3)
    """
    crop = model_crop_size(model)
    if stride is None:
        stride = max(1, crop // 4)
    if isinstance(stride, bool) or int(stride) != stride or not 1 <= stride <= crop:
        raise ValueError(f"stride must be an integer from 1 to the crop size {crop}, got {stride!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    stride, batch_size = int(stride), int(batch_size)
    name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__
    pixels = upscaled_image(load_image(image), crop)
    height, width = pixels.shape[:2]
    tops = np.asarray(numpy_crops.dense_positions(height - crop, stride), np.int64)
    lefts = np.asarray(numpy_crops.dense_positions(width - crop, stride), np.int64)
    crops = np.stack([pixels[t : t + crop, l : l + crop, :] for t in tops for l in lefts]).astype(np.float32)
    # One crop per set: each crop's own score, from the package's one scoring loop.
    scores = score_crop_sets(model, crops[:, None], batch_size).reshape(len(tops), len(lefts)).astype(np.float32)
    display = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return QualityMap(scores, tops, lefts, crop, stride, display, name)


def save_quality_map(qmap, png_path, npy_path=None, title=None, higher_is_better=True, alpha=0.45, dpi=100):
    """Writes a quality map as a PNG and its grid as a `.npy` array.

    The PNG shows the image under the per-pixel map (`QualityMap.pixel_map`)
    drawn semi-transparent (red: the worse scores, green: the better), a colour bar in score units, and a title with the image score.
    Drawn with matplotlib's Agg canvas (no display needed).

    Args:
        qmap: `QualityMap`.
        png_path: str. The PNG to write.
        npy_path: str or None. Where to save `qmap.scores` (float32
            `(rows, cols)`); defaults to `png_path` with `.npy`.
        title: str or None. Defaults to the file name and the image score on
            the map's grid.
        higher_is_better: bool or None. Colour direction: red marks the worse
            end; None (unknown) draws with viridis. Defaults to `True` (MOS).
        alpha: float. Opacity of the heat map. Defaults to `0.45`.
        dpi: int. Resolution of the PNG. Defaults to `100`.

    Returns:
        `(png_path, npy_path)`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if npy_path is None:
        npy_path = os.path.splitext(png_path)[0] + ".npy"
    for path in (png_path, npy_path):
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
    np.save(npy_path, qmap.scores.astype(np.float32))

    if title is None:
        rows, cols = qmap.scores.shape
        title = (
            f"{os.path.basename(qmap.name) or 'image'}: score {qmap.score:.2f}\n"
            f"(mean of a {rows}x{cols} crop grid, crop {qmap.crop_size}, stride {qmap.stride})"
        )
    height, width = qmap.image.shape[:2]
    size = 6.4
    figure = Figure(figsize=(size * 1.22, size * height / width + 1.0), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.imshow(qmap.image)
    low, high = float(qmap.scores.min()), float(qmap.scores.max())
    if high <= low:  # a flat map still gets a readable colour bar
        low, high = low - 0.5, high + 0.5
    # Red marks the worse end when the direction is known; viridis says nothing about it.
    colours = "viridis" if higher_is_better is None else ("RdYlGn" if higher_is_better else "RdYlGn_r")
    shown = axes.imshow(qmap.pixel_map(), cmap=colours, alpha=alpha, vmin=low, vmax=high, interpolation="nearest")
    bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.03)
    bar.solids.set(alpha=1.0)
    direction = "" if higher_is_better is None else (" (higher is better)" if higher_is_better else " (lower is better)")
    bar.set_label("score of the crops covering each pixel" + direction)
    axes.set_title(title, fontsize=10)
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(png_path, dpi=dpi)
    return png_path, npy_path
