"""LiteRT (`.tflite`) export of an ADTRS model (TensorFlow-only module).

The artifact takes crops and returns one score per crop; images are turned
into crops by the caller with the shared rule (`keras_adtrs.data.crops`), as
`keras_adtrs.serving.runtimes.LiteRTModel` does:

- signature `serving_default`: input `crops` float32 `(B, crop, crop, 3)`,
  NHWC RGB in [0, 255]; output `score` float32 `(B,)`; `B` is free (the
  interpreter resizes the input);
- built-in LiteRT operators only (no TensorFlow "select" ops), so the plain
  LiteRT runtime on a phone runs it;
- `quantize=None` (float32), `"float16"` (float16 weights) or `"int8"`
  (dynamic range: int8 weights, float32 input and output).

The conversion follows Keras' own LiteRT path (`keras.Model.export(...,
format="litert")`): a Keras `ExportArchive` SavedModel, then
`tf.lite.TFLiteConverter.from_saved_model`; the archive's endpoint is named
here so the signature's keys are `crops` and `score`.
"""

import functools
import tempfile

import keras
import tensorflow as tf

from keras_adtrs.serving.signatures import ARTIFACT_INPUT, ARTIFACT_OUTPUT, LITERT_SIGNATURE
from keras_adtrs.models.folding import folded_for_inference
from keras_adtrs.serving.artifacts import artifact_metadata, check_combination, check_float32, write_artifact


def _score_endpoint(model, crops):
    return {ARTIFACT_OUTPUT: tf.cast(tf.reshape(model(crops, training=False), [-1]), tf.float32)}


def litert_bytes(model, quantize=None):
    """The LiteRT flatbuffer of `model` (as given: fold it first for serving).

    Args:
        model: a Keras model with `crop_size`, taking `(B, c, c, 3)` crops in
            [0, 255] and returning `(B,)` scores.
        quantize: None, `"float16"` or `"int8"` (dynamic range).

    Returns:
        bytes.
    """
    check_combination("litert", quantize)
    crop = int(model.crop_size)
    signature = [tf.TensorSpec([None, crop, crop, 3], tf.float32, name=ARTIFACT_INPUT)]
    with tempfile.TemporaryDirectory(prefix="adtrs-litert-") as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(LITERT_SIGNATURE, functools.partial(_score_endpoint, model), input_signature=signature)
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[LITERT_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a data set: dynamic range
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def export_litert(
    model,
    path,
    quantize=None,
    fold_batchnorm=True,
    overwrite=False,
    source_model=None,
    run_record=None,
    num_crops=9,
):
    """Writes a LiteRT artifact and its metadata (`<path>.json`).

    Args:
        model: an `ADTRSModel`.
        path: str. The `.tflite` file to write (see
            `keras_adtrs.serving.artifacts.artifact_path`).
        quantize: None (float32), `"float16"` or `"int8"` (dynamic range).
            Defaults to `None`.
        fold_batchnorm: bool. Export the copy with BatchNorm folded into the
            convolutions (`keras_adtrs.fold_batchnorm`), as the SavedModel.
            Defaults to `True`.
        overwrite: bool. Replace an existing file. Defaults to `False`.
        source_model: str or None. The `.keras` file, hashed into the metadata.
        run_record: dict or None. The run's `config.json`, for the score's meaning.
        num_crops: int. Crops per image recorded for scoring images. Defaults to `9`.

    Returns:
        str, `path`.

    Example:
    >>> export_litert(model, "exports/adtrs-int8.tflite", quantize="int8")  # doctest: +SKIP
    'exports/adtrs-int8.tflite'
    """
    check_combination("litert", quantize)
    if getattr(model, "crop_size", None) is None:
        raise ValueError("model has no `crop_size` attribute; export an ADTRSModel")
    check_float32(model, "litert")
    exported = folded_for_inference(model) if fold_batchnorm else model

    def write(tmp):
        data = litert_bytes(exported, quantize)
        with open(tmp, "wb") as handle:
            handle.write(data)

    def metadata(tmp):
        return artifact_metadata(
            exported, tmp, "litert", quantize, source_model, run_record, num_crops,
            converter=f"tf.lite.TFLiteConverter (TensorFlow {tf.__version__}), built-in operators only",
        )

    return write_artifact(path, write, metadata, overwrite=overwrite)
