"""Image decoding: the one place that turns files, bytes and arrays into uint8 RGB.

Everything that reads images uses this module: the tf.data pipeline
(`decode_image_tensor`, a graph op also used inside the SavedModel), the numpy
pipeline, `keras_adtrs.score`, the commands and the serving client
(`load_image`). The rules, whatever the decoder:

- grayscale becomes RGB, alpha is dropped, 16-bit input is scaled to 8 bits
  (`value // 256`, `tf.io.decode_image`'s rule, the same for files and
  arrays), a GIF gives its first frame, EXIF rotation is not applied;
- a file that cannot be read or decoded raises `ImageReadError` naming it.

Two decoders: `"tensorflow"` (`tf.io.decode_image`, what the SavedModel
runs) and `"pil"` (Pillow, no TensorFlow). PNG, BMP and GIF decode
identically; JPEG pixels may differ by a few levels (IDCT and upsampling
details). `load_image` uses TensorFlow on the TensorFlow backend and
Pillow otherwise (`keras_adtrs.data.backend.uses_tensorflow`: the JAX backend
never imports TensorFlow for images).
"""

import glob
import io
import os
import re
import struct

import numpy as np
from PIL import Image

from keras_adtrs.console import filtered_stderr
from keras_adtrs.data.backend import uses_tensorflow
from keras_adtrs.errors import ADTRSError

#: File extensions `expand_paths` picks up in folders: what `tf.io.decode_image`
#: (and so the SavedModel) decodes. Files named explicitly are tried whatever
#: their extension.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DECODERS = ("tensorflow", "pil")
#: What Pillow raises on data it cannot decode.
PIL_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError)


class ImageReadError(ADTRSError, ValueError):
    """An image could not be read or decoded; the message names it."""


def default_decoder():
    """`"tensorflow"` on the TensorFlow backend, else `"pil"` (`keras_adtrs.data.backend.uses_tensorflow`)."""
    return "tensorflow" if uses_tensorflow() else "pil"


def _describe(source, index):
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"image #{index} ({type(source).__name__})"


def _first_line(exc):
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    message = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    # TensorFlow prefixes op errors with "{{function_node ...}} ".
    return re.sub(r"^\{\{[^}]*\}\}\s*", "", message).replace(" [Op:DecodeImage]", "")


def decode_image_tensor(image_bytes):
    """Encoded JPEG/PNG/BMP/GIF (first frame) tensor -> uint8 RGB `(H, W, 3)` tensor.

    A TensorFlow graph op (tf.data pipelines, the SavedModel's signatures):
    grayscale is replicated to RGB, alpha is dropped, 16-bit PNG is scaled to
    8 bits (`tf.io.decode_image`'s conversion).
    """
    import tensorflow as tf  # TensorFlow-only path: the JAX backend never calls it

    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_image_tensorflow(data, name="image"):
    """Encoded bytes -> uint8 RGB `(H, W, 3)` with `tf.io.decode_image` (eagerly)."""
    import tensorflow as tf  # TensorFlow-only path: the JAX backend never calls it

    try:
        with filtered_stderr():  # libjpeg's warnings on broken files; the error comes back as an exception
            image = decode_image_tensor(tf.constant(bytes(data))).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as exc:
        raise ImageReadError(f"{name}: not a decodable JPEG/PNG/BMP/GIF/WebP image ({_first_line(exc)})") from None
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageReadError(f"{name}: decodes to an empty image {image.shape}")
    return image


def decode_image_pil(data, name="image"):
    """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> uint8 RGB `(H, W, 3)` with Pillow (no TensorFlow)."""
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
    except PIL_DECODE_ERRORS as exc:
        raise ImageReadError(f"{name}: not a decodable image ({exc})") from None
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageReadError(f"{name}: decodes to an empty image {array.shape}")
    return np.ascontiguousarray(array)


def decode_image(data, name="image", decoder=None):
    """Encoded image bytes -> uint8 RGB `(H, W, 3)` with `decoder` (see `default_decoder`)."""
    decoder = decoder or default_decoder()
    if decoder == "tensorflow":
        return decode_image_tensorflow(data, name)
    if decoder == "pil":
        return decode_image_pil(data, name)
    raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")


def load_image(source, index=0, decoder=None):
    """Reads one image as uint8 RGB.

    Args:
        source: a file path (`str` or `os.PathLike`), encoded image bytes
            (JPEG, PNG, BMP, GIF or WebP), or an array (see `array_to_rgb8`).
        index: int. Position in the caller's list, used to name unnamed
            inputs in error messages. Defaults to `0`.
        decoder: `"tensorflow"`, `"pil"` or None (`default_decoder()`).

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
        if not len(source):
            raise ImageReadError(f"{name}: file is empty")
        return decode_image(source, name, decoder)
    try:
        array = np.asarray(source)
    except (TypeError, ValueError) as exc:
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


def expand_paths(inputs, extensions=IMAGE_EXTENSIONS):
    """Expands files, folders (recursively) and glob patterns into file paths.

    Folders and globs contribute files whose extension is in `extensions`
    (case-insensitive), sorted; files named explicitly are kept whatever their
    extension; inputs that match nothing are kept as they are, so that a
    scorer reports them as missing. Duplicates are dropped.

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
