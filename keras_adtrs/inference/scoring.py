"""Score whole images: decode, upscale if small, crop grid, mean over crops.

The same rules as the SavedModel's `serving_default` (`keras_adtrs.data.crops_tensorflow`
and `keras_adtrs.data.crops`), so `score` and TF Serving agree.

Scores do not depend on batch composition: every forward call holds exactly
`batch_size` crops (the last one padded with blank crops that are thrown
away), each crop is scored on its own (BatchNorm in inference mode), and an
image's crops are averaged in a fixed order. The same image therefore scores
the same alone, in a batch, in another order or on another run.
"""

import contextlib
import csv
import glob
import io
import json
import os
import re
import sys
import tempfile

import numpy as np

#: File extensions `expand_paths` picks up in folders: what `tf.io.decode_image`
#: (and so the SavedModel) decodes. Files named explicitly are tried whatever
#: their extension.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# libjpeg's chatter on broken files (the error itself comes back as an
# exception) and TensorFlow's C++ log lines printed while an op first runs.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|^[IW]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\]|"
    r"^To enable the following instructions|rebuild TensorFlow with the appropriate compiler|"
    r"^Improper call to JPEG library|^Corrupt JPEG data|^Premature end of JPEG|^libpng (warning|error)"
)


class ImageReadError(ValueError):
    """An image could not be read or decoded; the message names it."""


@contextlib.contextmanager
def filtered_stderr(pattern=_NOISE):
    """Captures what C/C++ code writes to file descriptor 2 and replays all but the noise.

    Python-level `sys.stderr` output inside the block is captured too and
    replayed afterwards, in order, minus lines matching `pattern`.

    Args:
        pattern: compiled regex of the lines to drop. Defaults to
            TensorFlow's start-up lines and libjpeg's warnings.

    Example:
    >>> with filtered_stderr():  # doctest: +SKIP
    ...     import tensorflow
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if line.strip() and not pattern.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _describe(source, index):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"image #{index} ({type(source).__name__})"


def _first_line(exc):
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    message = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    # TensorFlow prefixes op errors with "{{function_node ...}} ".
    return re.sub(r"^\{\{[^}]*\}\}\s*", "", message).replace(" [Op:DecodeImage]", "")


def load_image(source, index=0):
    """Reads one image as uint8 RGB.

    Grayscale becomes RGB, alpha is dropped, 16-bit input is scaled to 8 bits
    by `tf.io.decode_image`'s rule (`value // 256`, the same for files and
    arrays), GIFs give their first frame.

    Args:
        source: a file path (`str` or `os.PathLike`), encoded image bytes
            (JPEG, PNG, BMP, GIF or WebP), or an array (see `array_to_rgb8`).
        index: int. Position in the caller's list, used to name unnamed
            inputs in error messages. Defaults to `0`.

    Returns:
        uint8 numpy array `(H, W, 3)`.

    Raises:
        ImageReadError: the file is missing, empty or not a decodable image;
            the message names the file (or the list position).

    Example:
    >>> load_image("photo.jpg").shape  # doctest: +SKIP
    (480, 640, 3)
    """
    name = _describe(source, index)
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            raise ImageReadError(f"{name}: is a folder, not an image file")
        try:
            with open(source, "rb") as handle:
                source = handle.read()
        except OSError as exc:
            raise ImageReadError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = bytes(source)
        if not source:
            raise ImageReadError(f"{name}: file is empty")
        import tensorflow as tf

        from keras_adtrs.data.crops_tensorflow import decode_image

        try:
            with filtered_stderr():
                image = decode_image(tf.constant(source)).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as exc:
            raise ImageReadError(
                f"{name}: not a decodable JPEG/PNG/BMP/GIF/WebP image ({_first_line(exc)})"
            ) from None
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ImageReadError(f"{name}: decodes to an empty image {image.shape}")
        return image
    try:
        array = np.asarray(source)
    except Exception as exc:  # noqa: BLE001 (anything unconvertible is a read error)
        raise ImageReadError(f"{name}: cannot be read as an image ({exc})") from None
    return array_to_rgb8(array, name)


def array_to_rgb8(array, name="array"):
    """Converts a pixel array to uint8 RGB.

    Args:
        array: array `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or `(H, W, 4)` of
            uint8, uint16 (scaled as `value // 256`, `tf.io.decode_image`'s
            rule), another integer type with values in [0, 255], or float
            with values in [0, 255] (rounded; clipped).
        name: str. Name used in error messages. Defaults to `"array"`.

    Returns:
        uint8 numpy array `(H, W, 3)`.

    Raises:
        ImageReadError: the shape, type or values cannot be an image.

    Example:
    >>> array_to_rgb8(np.zeros((4, 4), "uint16")).shape
    (4, 4, 3)
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageReadError(
            f"{name}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageReadError(f"{name}: empty image of shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ImageReadError(
                f"{name}: {array.dtype} pixels must lie in [0, 255], found [{array.min()}, {array.max()}]"
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageReadError(f"{name}: has NaN or infinite pixel values")
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
    raise ImageReadError(f"{name}: unsupported pixel type {array.dtype}")


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
    import tensorflow as tf

    from keras_adtrs.data.crops_tensorflow import grid_crops

    return grid_crops(tf.convert_to_tensor(image), crop_size, num_crops).numpy()


def random_image_crops(image, crop_size, num_crops, seed=0, key=0):
    """Seeded random crops (with random horizontal flips, as in training) of a uint8 image.

    Stateless: the crops depend only on `(seed, key, crop number)`, so the
    same image under the same key gets the same crops on every run and in
    any batch.

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
    import tensorflow as tf

    from keras_adtrs.data.crops_tensorflow import random_crop, upscale

    if num_crops < 1:
        raise ValueError(f"need at least one crop, got {num_crops}")
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


class _CropScorer:
    """Scores queued crops in forward calls of exactly `batch_size` crops."""

    def __init__(self, model, batch_size):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
        if count < self.batch_size:  # pad: every forward call has the same shape
            pad = np.zeros((self.batch_size - count,) + batch.shape[1:], np.float32)
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
    from tqdm.auto import tqdm

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
            this size). Defaults to `32`.
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
        paths: list of file paths (see `expand_paths` for folders and globs).
        crops: int. Grid crops per image. Defaults to `9`.
        batch_size: int. Crops per forward call. Defaults to `32`.
        progress: bool. Show a progress bar on stderr. Defaults to `False`.

    Returns:
        list of dicts in the order of `paths`: `{"path": str, "score": float}`
        or `{"path": str, "error": str}`. `format_rows` prints them.

    Example:
    >>> rows = score_files(model, expand_paths(["photos/"]))  # doctest: +SKIP
    >>> print(format_rows(rows, "table"))  # doctest: +SKIP
    """
    paths = [os.fspath(p) for p in paths]
    scores, errors = _score_each(model, paths, crops, batch_size, "grid", 0, None, progress, "row")
    return [
        {"path": path, "error": errors[i]} if i in errors else {"path": path, "score": score_value(scores[i])}
        for i, path in enumerate(paths)
    ]


def score_value(value):
    """A float32 score as the float printed everywhere (6 decimals)."""
    return round(float(value), 6)


def expand_paths(inputs, extensions=IMAGE_EXTENSIONS):
    """Expands files, folders (recursively) and glob patterns into file paths.

    Folders and globs contribute files whose extension is in `extensions`
    (case-insensitive), sorted; files named explicitly are kept whatever their
    extension; inputs that match nothing are kept as they are, so that
    `score_files` reports them as missing. Duplicates are dropped.

    Args:
        inputs: list of str paths, folders or glob patterns (`*`, `?`, `[...]`,
            `**`).
        extensions: tuple of lower-case extensions with the dot. Defaults to
            `IMAGE_EXTENSIONS`.

    Returns:
        list of str.

    Example:
    >>> expand_paths(["photos/", "extra/*.png", "one.jpg"])  # doctest: +SKIP
    """
    extensions = tuple(e.lower() for e in extensions)

    def wanted(path):
        return os.path.isfile(path) and os.path.splitext(path)[1].lower() in extensions

    def walk(folder):
        found = []
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            found += [os.path.join(root, f) for f in sorted(files) if wanted(os.path.join(root, f))]
        return found

    out, seen = [], set()
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths = walk(item)
        elif os.path.exists(item):
            paths = [item]
        elif glob.has_magic(item):
            paths = []
            for match in sorted(glob.glob(item, recursive=True)):
                paths += walk(match) if os.path.isdir(match) else ([match] if wanted(match) else [])
        else:
            paths = [item]  # missing: becomes an error row
        for path in paths:
            if path not in seen:
                seen.add(path)
                out.append(path)
    return out


def format_rows(rows, fmt="table"):
    """Renders `score_files` rows as `"table"`, `"csv"` or `"json"` text.

    Args:
        rows: list of `{"path", "score"}` / `{"path", "error"}` dicts.
        fmt: str. `"table"` (aligned columns), `"csv"` (header
            `path,score,error`) or `"json"` (a list of the row dicts).
            Defaults to `"table"`.

    Returns:
        str, without a trailing newline.
    """
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "error"])
        for row in rows:
            writer.writerow([row["path"], f"{row['score']:.6f}" if "score" in row else "", row.get("error", "")])
        return buffer.getvalue().rstrip("\n")
    if fmt == "table":
        cells = [(row["path"], f"{row['score']:.4f}" if "score" in row else "ERROR: " + row["error"]) for row in rows]
        width = max([len("path")] + [len(p) for p, _ in cells])
        lines = [f"{'path':<{width}}  score", f"{'-' * width}  {'-' * 5}"]
        lines += [f"{p:<{width}}  {s}" for p, s in cells]
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r}; choose table, csv or json")
