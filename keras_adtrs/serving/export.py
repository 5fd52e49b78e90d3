"""Export an ADTRS model as a TensorFlow Serving SavedModel.

`export_model` writes `export_dir/<name>/<version>/`, the layout TF Serving
watches (`--model_base_path=export_dir/<name>`), with two signatures:

- `serving_default`: `image_bytes` (`tf.string`, `[None]`, encoded
  JPEG/PNG/BMP/GIF, first frame of an animated GIF) -> `score`
  (`float32`, `[None]`).
- `serving_images`: `images` (`uint8`, `[None, None, None, 3]`, a batch of
  decoded RGB images of one size) -> `score` (`float32`, `[None]`).

Both apply the shared rules of `keras_adtrs.data` (upscale an image whose
shorter side is below the crop, take the deterministic grid of `num_crops`
crops), run the model on every crop of the request in one batch and return
the mean score per image: the same numbers as decoding, cropping and scoring
eagerly with the Keras model.

Bad input fails in the graph with `INVALID_ARGUMENT`: bytes that are not an
image (TensorFlow's own decode error), and images with more than
`max_pixels` pixels (checked from the file header before decoding, and again
after).

The export also holds `assets.extra/tf_serving_warmup_requests` (replayed by
TF Serving's `--enable_model_warmup`) and `assets.extra/adtrs_export.json`
(crop size, number of crops, pixel limit, signatures, model config, number of
BatchNorm layers folded).

By default the SavedModel serves a copy of the model with the backbone's
BatchNorm folded into its convolutions (`keras_adtrs.models.folding`):
the same scores up to float rounding, and faster (docs/benchmarks.md).

The command line is `python -m keras_adtrs.export`.
"""

import json
import os
import shutil
import uuid

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from keras_adtrs.data.crops_tensorflow import grid_crops
from keras_adtrs.data.images import decode_image_tensor
from keras_adtrs.models.folding import folded_for_inference
from keras_adtrs.serving.artifacts import deployment_record
from keras_adtrs.serving.signatures import (
    BYTES_INPUT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    METADATA_FILE,
    SCORE_OUTPUT,
    WARMUP_FILE,
)
from keras_adtrs.defaults import TEST_CROPS
from keras_adtrs.version import __version__



# ----------------------------------------------------------------- versions
def existing_versions(model_dir):
    """Sorted integer version numbers present under `model_dir`.

    Args:
        model_dir: str or path. `export_dir/<name>`.

    Returns:
        list of int; only folders named by a non-negative integer count (TF
        Serving ignores everything else, temporary folders included).
    """
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry))
    )


def _check_version(version):
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) and not str(version).isdigit():
        raise ValueError(f"version must be a positive integer, got {version!r}")
    version = int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return version


# ------------------------------------------------------------ graph pieces
def _header_pixels(image_bytes):
    """Pixel count `H * W` (int64) read from the file header; 0 if unknown.

    JPEG via `tf.image.extract_jpeg_shape`; PNG (IHDR), GIF (logical screen)
    and BMP (info header) parsed from their fixed header bytes. Unknown or
    truncated data gives 0 and is left to the decoder's own error.
    """
    length = tf.strings.length(image_bytes)
    magic = tf.strings.substr(image_bytes, 0, tf.minimum(length, 4))

    def read(pos, size, dtype, little_endian):
        raw = tf.strings.substr(image_bytes, pos, size)
        return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian), tf.int64)

    def be_u32(values):  # big-endian uint32 from 4 uint8 values
        return values[0] * 16777216 + values[1] * 65536 + values[2] * 256 + values[3]

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(image_bytes), tf.int64)
        return shape[0] * shape[1]

    def png():
        values = read(16, 8, tf.uint8, False)
        return be_u32(values[:4]) * be_u32(values[4:])

    def gif():
        values = read(6, 4, tf.uint16, True)
        return values[0] * values[1]

    def bmp():
        values = read(18, 8, tf.int32, True)
        return tf.abs(values[0]) * tf.abs(values[1])

    is_jpeg = tf.logical_and(length >= 4, tf.strings.substr(magic, 0, tf.minimum(length, 3)) == b"\xff\xd8\xff")
    is_png = tf.logical_and(length >= 24, magic == b"\x89PNG")
    is_gif = tf.logical_and(length >= 10, magic == b"GIF8")
    is_bmp = tf.logical_and(length >= 26, tf.strings.substr(magic, 0, tf.minimum(length, 2)) == b"BM")
    return tf.case(
        [(is_jpeg, jpeg), (is_png, png), (is_gif, gif), (is_bmp, bmp)],
        default=lambda: tf.constant(0, tf.int64),
        exclusive=False,
    )


def _assert_pixels(pixels, max_pixels, what):
    return tf.debugging.assert_less_equal(
        pixels,
        tf.constant(max_pixels, tf.int64),
        message=f"{what} has more pixels than the limit max_pixels={max_pixels}",
    )


def _build_module(model, num_crops, max_pixels):
    """A `tf.Module` holding the model and the two serving functions."""
    crop = int(model.crop_size)
    crops_spec = tf.TensorSpec([num_crops, crop, crop, 3], tf.float32)

    def score_crops(crops):
        # crops: (B, num_crops, crop, crop, 3) -> (B,) mean score.
        batch = tf.shape(crops)[0]

        def run():
            flat = tf.reshape(crops, [batch * num_crops, crop, crop, 3])
            scores = tf.cast(model(flat, training=False), tf.float32)
            return tf.reduce_mean(tf.reshape(scores, [batch, num_crops]), axis=1)

        # An empty request gets an empty answer (the network rejects batch 0).
        return tf.cond(batch > 0, run, lambda: tf.zeros([0], tf.float32))

    def crops_from_bytes(data):
        check = _assert_pixels(_header_pixels(data), max_pixels, "image (from its header)")
        with tf.control_dependencies([check]):
            image = decode_image_tensor(data)
        shape = tf.cast(tf.shape(image), tf.int64)
        check = _assert_pixels(shape[0] * shape[1], max_pixels, "decoded image")
        with tf.control_dependencies([check]):
            return grid_crops(image, crop, num_crops)

    def from_bytes(image_bytes):
        crops = tf.map_fn(crops_from_bytes, image_bytes, fn_output_signature=crops_spec)
        return {SCORE_OUTPUT: score_crops(crops)}

    def from_images(images):
        shape = tf.cast(tf.shape(images), tf.int64)
        check = _assert_pixels(shape[1] * shape[2], max_pixels, "image batch")
        with tf.control_dependencies([check]):
            crops = tf.map_fn(
                lambda image: grid_crops(image, crop, num_crops), images, fn_output_signature=crops_spec
            )
        return {SCORE_OUTPUT: score_crops(crops)}

    module = tf.Module()
    module.model = model  # tracks every variable of the Keras model
    # Not a signature (TF Serving takes images): one score per crop, for batch scoring that batches
    # the crops of many images itself (keras_adtrs.serving.scoring_beam).
    module.score_crop_batch = tf.function(
        lambda crops: tf.cast(model(crops, training=False), tf.float32),
        input_signature=[tf.TensorSpec([None, crop, crop, 3], tf.float32, name="crops")],
    )
    module.serving_default = tf.function(
        from_bytes, input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)]
    )
    module.serving_images = tf.function(
        from_images, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_INPUT)]
    )
    return module


# ------------------------------------------------------------------ assets
def _warmup_png(crop_size):
    """A small generated PNG (a colour gradient, `crop_size` square)."""
    ramp = np.linspace(0, 255, crop_size, dtype="float32")
    image = np.stack(
        [np.tile(ramp, (crop_size, 1)), np.tile(ramp[:, None], (1, crop_size)), np.full((crop_size, crop_size), 128.0)],
        axis=-1,
    ).astype("uint8")
    return tf.io.encode_png(image).numpy()


def write_warmup_requests(path, name, images):
    """Writes TF Serving warm-up records (`PredictionLog` TFRecords).

    Args:
        path: str. Output file, `<version>/assets.extra/tf_serving_warmup_requests`.
        name: str. Model name put in each request's `model_spec`.
        images: list of bytes. Encoded images; one `serving_default` request each.
    """
    with tf.io.TFRecordWriter(path) as writer:
        for data in images:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = DEFAULT_SIGNATURE
            request.inputs[BYTES_INPUT].CopyFrom(tf.make_tensor_proto([data], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _metadata(model, name, version, num_crops, max_pixels, source_model=None, run_record=None, precision_choice=None):
    try:
        config = model.get_config()
        json.dumps(config)
    except (NotImplementedError, TypeError, ValueError):  # a config is a bonus, not a must
        config = None
    return {
        "format": "keras_adtrs TF Serving export",
        "keras_adtrs_version": __version__,
        "name": name,
        "version": version,
        "crop_size": int(model.crop_size),
        "num_crops": int(num_crops),
        "max_pixels": int(max_pixels),
        "score": "mean of the model's score over the deterministic crop grid",
        "batchnorm_folded": int(getattr(model, "batchnorm_folded", 0)),
        "signatures": {
            DEFAULT_SIGNATURE: {
                "inputs": {BYTES_INPUT: {"dtype": "string", "shape": [None]}},
                "outputs": {SCORE_OUTPUT: {"dtype": "float32", "shape": [None]}},
            },
            IMAGES_SIGNATURE: {
                "inputs": {IMAGES_INPUT: {"dtype": "uint8", "shape": [None, None, None, 3]}},
                "outputs": {SCORE_OUTPUT: {"dtype": "float32", "shape": [None]}},
            },
        },
        "model_config": config,
        # What every artifact's metadata holds (keras_adtrs.serving.artifacts): the
        # crop model inside, its input and range, the score's meaning, the source's hash.
        "deployment": deployment_record(model, "savedmodel", None, source_model, run_record, num_crops,
                                        precision_choice),
    }


def read_export_metadata(version_dir):
    """The `assets.extra/adtrs_export.json` of an export, as a dict.

    Args:
        version_dir: str. A version folder written by `export_model`.
    """
    with open(os.path.join(version_dir, "assets.extra", METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------ export
def export_model(
    model,
    export_dir,
    name="adtrs",
    version=None,
    num_crops=TEST_CROPS,
    max_pixels=DEFAULT_MAX_PIXELS,
    overwrite=False,
    warmup_images=None,
    fold_batchnorm=True,
    source_model=None,
    run_record=None,
    precision_choice=None,
):
    """Exports an ADTRS model as a versioned SavedModel for TF Serving.

    The version folder is written under a temporary sibling name starting
    with `.tmp-` (which TF Serving never loads: it only loads integer-named
    folders) and renamed into place once complete, so a watcher never sees a
    half-written version and a failed export leaves nothing behind.

    Args:
        model: an `ADTRSModel` (or any Keras model with a `crop_size`
            attribute taking `(B, crop, crop, 3)` pixels in [0, 255] and
            returning `(B,)` scores).
        export_dir: str or path. The base folder; the export goes to
            `export_dir/<name>/<version>/`.
        name: str. Model name (TF Serving's `--model_name`). Defaults to
            `"adtrs"`.
        version: int or None. Version number; `None` takes 1 or the next
            integer after the highest existing one. Defaults to `None`.
        num_crops: int. Crops per image in the deterministic grid. Defaults
            to `9`.
        max_pixels: int. Largest accepted `height * width`; larger images
            fail with `INVALID_ARGUMENT`. Defaults to `40_000_000`.
        overwrite: bool. Replace an existing version. Defaults to `False`
            (a `FileExistsError` is raised).
        warmup_images: list of bytes or paths, or None. Images for the
            warm-up requests; `None` uses one generated PNG. Defaults to
            `None`.
        fold_batchnorm: bool. Serve a copy with the backbone's BatchNorm
            folded into its convolutions (`keras_adtrs.fold_batchnorm`: the
            same scores up to float rounding, faster: docs/benchmarks.md); `model`
            itself is not changed. Defaults to `True`.
        source_model: str or None. The `.keras` file the model came from; its
            sha256 goes into the metadata. Defaults to `None`.
        run_record: dict or None. The training run's `config.json`, for the
            score's meaning and direction in the metadata. Defaults to `None`.
        precision_choice: str or None. How an `auto` precision was chosen
            (recorded in the metadata). Defaults to `None`.

    Returns:
        str, the path of the version folder.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    >>> path = export_model(model, "/tmp/models")  # doctest: +SKIP
    >>> path  # doctest: +SKIP
    '/tmp/models/adtrs/1'
    """
    crop_size = getattr(model, "crop_size", None)
    if crop_size is None:
        raise ValueError("model has no `crop_size` attribute; export an ADTRSModel")
    if isinstance(num_crops, bool) or int(num_crops) != num_crops or num_crops < 1:
        raise ValueError(f"num_crops must be a positive integer, got {num_crops!r}")
    if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    num_crops, max_pixels = int(num_crops), int(max_pixels)
    version = _check_version(version)

    model_dir = os.path.join(os.fspath(export_dir), name)
    os.makedirs(model_dir, exist_ok=True)
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    final_dir = os.path.join(model_dir, str(version))
    if os.path.exists(final_dir) and not overwrite:
        raise FileExistsError(
            f"version {version} of model {name!r} already exists at {final_dir}; "
            "pass overwrite=True to replace it, or choose another version"
        )

    if warmup_images is None:
        warmup = [_warmup_png(crop_size)]
    else:
        warmup = []
        for item in warmup_images:
            if isinstance(item, (bytes, bytearray)):
                warmup.append(bytes(item))
            else:
                with open(item, "rb") as f:
                    warmup.append(f.read())

    served = model
    if fold_batchnorm:
        served = folded_for_inference(model)
    tmp_dir = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        module = _build_module(served, num_crops, max_pixels)
        signatures = {
            DEFAULT_SIGNATURE: module.serving_default.get_concrete_function(),
            IMAGES_SIGNATURE: module.serving_images.get_concrete_function(),
        }
        tf.saved_model.save(module, tmp_dir, signatures=signatures)
        extra = os.path.join(tmp_dir, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        write_warmup_requests(os.path.join(extra, WARMUP_FILE), name, warmup)
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_metadata(served, name, version, num_crops, max_pixels, source_model, run_record,
                                precision_choice), f, indent=2)
        _move_into_place(tmp_dir, final_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return final_dir


def _move_into_place(tmp_dir, final_dir, overwrite):
    old = None
    if os.path.exists(final_dir):
        if not overwrite:
            raise FileExistsError(f"{final_dir} appeared while exporting; not overwriting it")
        old = os.path.join(os.path.dirname(final_dir), f".tmp-old-{os.path.basename(final_dir)}-{uuid.uuid4().hex[:8]}")
        os.rename(final_dir, old)
    try:
        os.rename(tmp_dir, final_dir)
    except BaseException:
        if old is not None:
            os.rename(old, final_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
