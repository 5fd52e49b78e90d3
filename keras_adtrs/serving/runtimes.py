"""Score crops with exported artifacts outside Keras: LiteRT (`.tflite`) and ONNX (`.onnx`).

`load_artifact(path)` returns an object with what `keras_adtrs.score`,
`keras_adtrs.models.scoring.score_files` and `keras_adtrs.quality_map`
need of a model: `crop_size` and `predict_on_batch(crops) -> (B,) scores`.
So an artifact scores files with the same decoding, upscaling and crop grid
as the Keras model it came from (the rule in `keras_adtrs.data.crops`).

The artifacts written by `python -m keras_adtrs.export --format litert|onnx`
take one input, `crops`: float32 `(B, crop, crop, 3)`, NHWC, RGB, pixel
values in [0, 255] (not normalised: the model normalises its input), and give
one output, `score`: float32 `(B,)`, one score per crop; `B` is free. Their
metadata is a JSON file beside them (`<artifact>.json`, `read_metadata`).

Runtimes, imported only when used:

- LiteRT: `ai_edge_litert.interpreter.Interpreter` (the `litert` extra),
  else TensorFlow's deprecated `tf.lite.Interpreter`;
- ONNX: `onnxruntime` (the `onnx` extra), CPU execution provider.

A file that is missing, truncated or not an artifact of the right kind
raises `ArtifactError` naming it.

Example:
>>> model = load_artifact("exports/adtrs.tflite")  # doctest: +SKIP
>>> keras_adtrs.score(model, ["photo.jpg"])  # doctest: +SKIP
"""

import contextlib
import importlib
import json
import os

import numpy as np

from keras_adtrs.console import stderr_silenced, verbose_requested
from keras_adtrs.errors import ADTRSError
from keras_adtrs.serving.signatures import (
    ARTIFACT_INPUT,
    ARTIFACT_OUTPUT,
    EXTENSIONS,
    LITERT_SIGNATURE,
    metadata_path,
)


class ArtifactError(ADTRSError, ValueError):
    """An artifact or its metadata cannot be used; the message names the file."""


def runtime_for(path):
    """The runtime a file is for, from its extension: `litert`, `onnx` or `keras` (anything else)."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    for runtime, wanted in EXTENSIONS.items():
        if extension == wanted:
            return runtime
    return "keras"


def read_metadata(artifact):
    """The metadata beside an artifact, as a dict; None when there is no such file.

    Args:
        artifact: str or path. The `.tflite` or `.onnx` file.

    Raises:
        ArtifactError: the metadata file is not a JSON object (the message names it).
    """
    path = metadata_path(artifact)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the artifact's metadata ({exc})") from None
    if not isinstance(record, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(record).__name__}")
    return record


def _threads(num_threads):
    if num_threads is None:
        return os.cpu_count() or 1
    if isinstance(num_threads, bool) or int(num_threads) != num_threads or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    return int(num_threads)


def _crop_side(path, shape):
    """The crop side from an input shape `(B, c, c, 3)`; ArtifactError unless it is one."""
    shape = [None if d is None or (isinstance(d, (int, np.integer)) and d < 0) or isinstance(d, str) else int(d)
             for d in shape]
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ArtifactError(
            f"{path}: input shape {shape} is not (batch, crop, crop, 3); not a keras_adtrs artifact"
        )
    return shape[1]


class _Artifact:
    runtime = None

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ArtifactError(f"{self.path}: no such file")
        if os.path.getsize(self.path) == 0:
            raise ArtifactError(f"{self.path}: file is empty")
        self.metadata = read_metadata(self.path)
        self.crop_size = None

    def _check_metadata(self):
        if self.metadata is None:
            return
        recorded = self.metadata.get("crop_size")
        if recorded is not None and recorded != self.crop_size:
            raise ArtifactError(
                f"{metadata_path(self.path)}: says crop {recorded}, but {self.path} takes crops of {self.crop_size}"
            )

    def _batch(self, crops):
        crops = np.asarray(crops, np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_size, self.crop_size, 3):
            raise ValueError(
                f"{self.path} takes crops (B, {self.crop_size}, {self.crop_size}, 3), got {crops.shape}"
            )
        return np.ascontiguousarray(crops)

    def __call__(self, crops):
        return self.predict_on_batch(crops)

    def __repr__(self):
        return f"<{type(self).__name__} {self.path} crop={self.crop_size}>"


class LiteRTModel(_Artifact):
    """A `.tflite` artifact in the LiteRT interpreter.

    Args:
        path: str or path. The `.tflite` file.
        num_threads: int or None. Interpreter threads; `None` takes every CPU.
    """

    runtime = "litert"

    def __init__(self, path, num_threads=None):
        super().__init__(path)
        interpreter_class, self.interpreter_module = _litert_interpreter()
        try:
            self.interpreter = interpreter_class(model_path=self.path, num_threads=_threads(num_threads))
        except ValueError as exc:
            raise ArtifactError(f"{self.path}: not a usable LiteRT model ({_first_line(exc)})") from None
        signatures = self.interpreter.get_signature_list()
        keys = signatures.get(LITERT_SIGNATURE, {})
        if keys.get("inputs") != [ARTIFACT_INPUT] or keys.get("outputs") != [ARTIFACT_OUTPUT]:
            raise ArtifactError(
                f"{self.path}: expected signature {LITERT_SIGNATURE!r} ({ARTIFACT_INPUT} -> {ARTIFACT_OUTPUT}), "
                f"found {signatures}; not a keras_adtrs artifact"
            )
        # Allocating applies the XNNPACK delegate, which announces itself on
        # file descriptor 2; KERAS_ADTRS_VERBOSE=1 shows it.
        with contextlib.nullcontext() if verbose_requested() else stderr_silenced():
            self.interpreter.allocate_tensors()
        self._runner = self.interpreter.get_signature_runner(LITERT_SIGNATURE)
        details = self._runner.get_input_details()[ARTIFACT_INPUT]
        self.crop_size = _crop_side(self.path, details["shape_signature"])
        self._check_metadata()

    def predict_on_batch(self, crops):
        """float32 scores `(B,)` of crops `(B, crop, crop, 3)` in [0, 255]."""
        batch = self._batch(crops)
        if not len(batch):
            return np.zeros((0,), np.float32)
        return np.asarray(self._runner(**{ARTIFACT_INPUT: batch})[ARTIFACT_OUTPUT], np.float32).reshape(-1)


class ONNXModel(_Artifact):
    """An `.onnx` artifact in ONNX Runtime (CPU).

    Args:
        path: str or path. The `.onnx` file.
        num_threads: int or None. Intra-op threads; `None` takes every CPU.
    """

    runtime = "onnx"

    def __init__(self, path, num_threads=None):
        super().__init__(path)
        ort = _import("onnxruntime", "onnx")
        errors = _onnxruntime_errors(ort)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads(num_threads)
        try:
            self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except errors as exc:
            raise ArtifactError(f"{self.path}: not a usable ONNX model ({_first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [ARTIFACT_INPUT] or [o.name for o in outputs] != [ARTIFACT_OUTPUT]:
            raise ArtifactError(
                f"{self.path}: expected input {ARTIFACT_INPUT!r} and output {ARTIFACT_OUTPUT!r}, found "
                f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}; not a keras_adtrs artifact"
            )
        self.crop_size = _crop_side(self.path, inputs[0].shape)
        self._check_metadata()

    def predict_on_batch(self, crops):
        """float32 scores `(B,)` of crops `(B, crop, crop, 3)` in [0, 255]."""
        batch = self._batch(crops)
        if not len(batch):
            return np.zeros((0,), np.float32)
        (scores,) = self.session.run([ARTIFACT_OUTPUT], {ARTIFACT_INPUT: batch})
        return np.asarray(scores, np.float32).reshape(-1)


def load_artifact(path, runtime=None, num_threads=None):
    """Loads a LiteRT or ONNX artifact for scoring.

    Args:
        path: str or path. A `.tflite` or `.onnx` file written by
            `python -m keras_adtrs.export`.
        runtime: `"litert"`, `"onnx"` or None (from the file extension).
        num_threads: int or None. CPU threads; `None` takes every CPU.

    Returns:
        `LiteRTModel` or `ONNXModel`: `crop_size`, `predict_on_batch`,
        `metadata` (the JSON beside it, or None), `runtime`, `path`.

    Raises:
        ArtifactError: the file is missing, empty, truncated, of another
            kind, or its input is not `(B, crop, crop, 3)`; the message names it.
        ImportError: the runtime is not installed (the message names the extra).

    Example:
    >>> model = load_artifact("exports/adtrs.onnx")  # doctest: +SKIP
    >>> model.predict_on_batch(np.zeros((2, 224, 224, 3), "float32")).shape  # doctest: +SKIP
    (2,)
    """
    runtime = runtime or runtime_for(path)
    if runtime == "litert":
        return LiteRTModel(path, num_threads=num_threads)
    if runtime == "onnx":
        return ONNXModel(path, num_threads=num_threads)
    raise ValueError(
        f"cannot tell the runtime of {os.fspath(path)}: pass runtime='litert' or 'onnx' "
        f"(files ending in {EXTENSIONS['litert']} or {EXTENSIONS['onnx']} are recognised)"
    )


# ------------------------------------------------------------------ helpers
def _import(module, extra):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for this runtime: pip install 'keras-adtrs[{extra}]' ({exc})"
        ) from exc


def _litert_interpreter():
    """`(Interpreter class, module name)`: ai_edge_litert's, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            "a LiteRT interpreter is needed: pip install 'keras-adtrs[litert]' (ai-edge-litert)"
        ) from exc
    return tf.lite.Interpreter, "tensorflow"


def _onnxruntime_errors(ort):
    """What ONNX Runtime raises on a file it cannot load (its own exception classes)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
             "NotImplemented", "RuntimeException", "EPFail")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
