"""ONNX (`.onnx`) export of an ADTRS model (TensorFlow-only module; needs the `onnx` extra).

The artifact takes crops and returns one score per crop, as the LiteRT one:
input `crops` float32 `(B, crop, crop, 3)`, NHWC RGB in [0, 255]; output
`score` float32 `(B,)`; the batch `B` is a free dimension; opset
`keras_adtrs.serving.artifacts.ONNX_OPSET` (17). Only float32 is exported.

The conversion is Keras' own (`keras.Model.export(..., format="onnx")`,
which runs `tf2onnx` on the traced call and makes it work with numpy 2). Two
things are done around it:

- `tf2onnx`'s transpose optimiser fails on an `Add` of a scalar constant
  after a convolution (the L2 pooling's epsilon) and then gives up on the
  whole graph, leaving two `Transpose` nodes around most convolutions (134
  `Transpose` nodes instead of 17); while converting, such an `Add` is
  handled as any other node instead, and the optimiser's graph copies are
  collected as they go (`_tf2onnx_fixes`);
- the output is renamed `score` and the `keras_adtrs` version, crop size and
  source hash are stored in the model's `metadata_props`.
"""

import contextlib
import copy
import gc
import json
import types
import warnings

import keras
import tensorflow as tf

from keras_adtrs.serving.signatures import ARTIFACT_INPUT, ARTIFACT_OUTPUT
from keras_adtrs.models.folding import folded_for_inference
from keras_adtrs.serving.artifacts import (
    ONNX_OPSET,
    artifact_metadata,
    check_combination,
    check_float32,
    deployment_record,
    write_artifact,
)


def _import_onnx():
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise ImportError(f"the ONNX export needs tf2onnx and onnx: pip install 'keras-adtrs[onnx]' ({exc})") from exc
    return onnx, tf2onnx


@contextlib.contextmanager
def _tf2onnx_fixes():
    """Two changes to tf2onnx's graph optimiser while converting, undone afterwards.

    - Its transpose optimiser skips (instead of failing on) an `Add` of a
      scalar constant after a convolution.
    - It deep-copies the whole graph, weights included, before each of its
      optimisers (to roll back a failing one); the copies hold reference
      cycles, so without a collection between them tens of copies pile up
      (a peak of over 11 GB for this model, against under 4.5 GB with it).
    """
    import tf2onnx.optimizer as optimizer_module
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    original_add, original_copy = TransposeOptimizer._add_handler, optimizer_module.copy

    def add_handler(self, trans, node):
        constant = node.inputs[1]
        if constant.is_const() and constant.get_tensor_value(as_list=False).ndim == 0:
            return self._handle_node_having_branches(trans, node)
        return original_add(self, trans, node)

    def deepcopy(value, memo=None):
        gc.collect()  # frees the previous optimiser's copy before making the next
        return copy.deepcopy(value, memo)

    TransposeOptimizer._add_handler = add_handler
    optimizer_module.copy = types.SimpleNamespace(deepcopy=deepcopy)
    try:
        yield
    finally:
        TransposeOptimizer._add_handler = original_add
        optimizer_module.copy = original_copy
        gc.collect()


def _rename_output(graph, new_name):
    (output,) = graph.output
    old_name = output.name
    for node in graph.node:
        node.output[:] = [new_name if name == old_name else name for name in node.output]
        node.input[:] = [new_name if name == old_name else name for name in node.input]
    output.name = new_name


def onnx_model(model, opset=ONNX_OPSET, work_path=None):
    """The ONNX `ModelProto` of `model` (as given: fold it first for serving).

    Args:
        model: a Keras model with `crop_size`, taking `(B, c, c, 3)` crops in
            [0, 255] and returning `(B,)` scores.
        opset: int. ONNX opset. Defaults to `ONNX_OPSET`.
        work_path: str. Where Keras' exporter writes the raw conversion
            (overwritten with the final model by `export_onnx`).

    Returns:
        `onnx.ModelProto` with input `crops` and output `score`.
    """
    onnx, _ = _import_onnx()
    crop = int(model.crop_size)
    spec = keras.InputSpec(shape=(None, crop, crop, 3), dtype="float32", name=ARTIFACT_INPUT)
    with _tf2onnx_fixes(), warnings.catch_warnings():
        # Keras' numpy-2 patch of tf2onnx probes `np.object`, which numpy warns about.
        warnings.filterwarnings("ignore", message=r"In the future `np\.object`", category=FutureWarning)
        model.export(work_path, format="onnx", input_signature=[spec], opset_version=int(opset), verbose=False)
    proto = onnx.load(work_path)
    if [i.name for i in proto.graph.input] != [ARTIFACT_INPUT] or len(proto.graph.output) != 1:
        raise RuntimeError(
            f"unexpected ONNX graph: inputs {[i.name for i in proto.graph.input]}, "
            f"{len(proto.graph.output)} outputs (expected {ARTIFACT_INPUT!r} and one output)"
        )
    _rename_output(proto.graph, ARTIFACT_OUTPUT)
    return proto


def export_onnx(
    model,
    path,
    fold_batchnorm=True,
    overwrite=False,
    source_model=None,
    run_record=None,
    num_crops=9,
    quantize=None,
):
    """Writes an ONNX artifact (opset `ONNX_OPSET`) and its metadata (`<path>.json`).

    Args:
        model: an `ADTRSModel`.
        path: str. The `.onnx` file to write.
        fold_batchnorm: bool. Export the BatchNorm-folded copy. Defaults to `True`.
        overwrite: bool. Replace an existing file. Defaults to `False`.
        source_model: str or None. The `.keras` file, hashed into the metadata.
        run_record: dict or None. The run's `config.json`, for the score's meaning.
        num_crops: int. Crops per image recorded for scoring images. Defaults to `9`.
        quantize: must be None: ONNX is exported in float32 only (a
            quantisation raises ValueError naming the combination).

    Returns:
        str, `path`.

    Example:
    >>> export_onnx(model, "exports/adtrs.onnx")  # doctest: +SKIP
    'exports/adtrs.onnx'
    """
    check_combination("onnx", quantize)
    if getattr(model, "crop_size", None) is None:
        raise ValueError("model has no `crop_size` attribute; export an ADTRSModel")
    check_float32(model, "onnx")
    onnx, tf2onnx = _import_onnx()
    exported = folded_for_inference(model) if fold_batchnorm else model

    def write(tmp):
        proto = onnx_model(exported, ONNX_OPSET, work_path=tmp)
        record = deployment_record(exported, "onnx", None, source_model, run_record, num_crops)
        props = {
            "keras_adtrs_version": record["keras_adtrs_version"],
            "crop_size": str(record["crop_size"]),
            "input": json.dumps(record["input"]),
            "score": json.dumps(record["score"]),
            "source_sha256": (record["source_model"] or {}).get("sha256", ""),
        }
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, tmp)

    def metadata(tmp):
        return artifact_metadata(
            exported, tmp, "onnx", None, source_model, run_record, num_crops,
            converter=f"keras.Model.export -> tf2onnx {tf2onnx.__version__} (TensorFlow {tf.__version__})",
        )

    return write_artifact(path, write, metadata, overwrite=overwrite)
