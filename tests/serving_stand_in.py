"""Test stand-in for TensorFlow Serving: an in-process gRPC server.

NOT TensorFlow Serving. It implements the parts of TF Serving's gRPC API the
client uses (`PredictionService.Predict`, `PredictionService.GetModelMetadata`,
`ModelService.GetModelStatus`) on top of an exported SavedModel loaded with
`tf.saved_model.load`, so the client and the export can be tested together
without the TF Serving binary. Request batching, model warm-up, version
policies, the REST API and file-system polling of the real server are not
reproduced.

Example:
>>> with ServingStandIn("/tmp/models", "adtrs") as server:  # doctest: +SKIP
...     client = ServingClient(server.target, "adtrs")
...     client.score_files(["a.jpg"])
"""

import os
import threading
from concurrent import futures

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from conftest import random_score_head


def latest_version(base_path):
    """Highest integer-named folder under `base_path` (TF Serving's default policy)."""
    versions = [int(e) for e in os.listdir(base_path) if e.isdigit() and os.path.isdir(os.path.join(base_path, e))]
    if not versions:
        raise FileNotFoundError(f"no integer-named version folder under {base_path}")
    return max(versions)


class ServingStandIn(
    prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer
):
    """Test stand-in: serves one exported model over gRPC on 127.0.0.1.

    Args:
        export_dir: str. The base folder given to `export_model`; the model is
            loaded from `export_dir/<model_name>/<latest version>/`.
        model_name: str. Defaults to `"adtrs"`.
        max_workers: int. gRPC worker threads. Defaults to `8`.
        port: int. `0` picks a free port. Defaults to `0`.

    Attributes:
        target: `"127.0.0.1:<port>"` once started.
        calls: number of RPCs received (any method).

    Use `fail_next(n)` to answer the next `n` RPCs with `UNAVAILABLE` (or
    another status code) before serving normally.
    """

    def __init__(self, export_dir, model_name="adtrs", max_workers=8, port=0):
        self.model_name = model_name
        base_path = os.path.join(os.fspath(export_dir), model_name)
        self.version = latest_version(base_path)
        self.model_dir = os.path.join(base_path, str(self.version))
        self.loaded = tf.saved_model.load(self.model_dir)
        saved_model = loader_impl.parse_saved_model(self.model_dir)
        self.signature_defs = {
            key: value
            for key, value in saved_model.meta_graphs[0].signature_def.items()
            if not key.startswith("__")
        }
        self._lock = threading.Lock()
        self._failures = []
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.target = f"127.0.0.1:{self.port}"

    # ---------------------------------------------------------------- control
    def start(self):
        self._server.start()
        return self

    def stop(self, grace=None):
        self._server.stop(grace)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def fail_next(self, count, code=grpc.StatusCode.UNAVAILABLE, message="test stand-in: simulated outage"):
        """Answers the next `count` RPCs with `code` instead of serving them."""
        with self._lock:
            self._failures.extend([(code, message)] * count)

    def _enter(self, context):
        with self._lock:
            self.calls += 1
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            context.abort(*failure)

    def _check_spec(self, model_spec, context):
        if model_spec.name != self.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({model_spec.name})")
        if model_spec.HasField("version") and model_spec.version.value != self.version:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({model_spec.name}, {model_spec.version.value})",
            )

    # ------------------------------------------------------------------- RPCs
    def GetModelMetadata(self, request, context):
        self._enter(context)
        self._check_spec(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is the only one supported")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        packed = any_pb2.Any()
        packed.Pack(signature_map)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        response.metadata["signature_def"].CopyFrom(packed)
        return response

    def GetModelStatus(self, request, context):
        self._enter(context)
        self._check_spec(request.model_spec, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.version
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        status.status.CopyFrom(status_pb2.StatusProto())
        return response

    def Predict(self, request, context):
        self._enter(context)
        self._check_spec(request.model_spec, context)
        signature_name = request.model_spec.signature_name or "serving_default"
        if signature_name not in self.signature_defs:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Serving signature name: \"{signature_name}\" not found in signature def"
            )
        function = self.loaded.signatures[signature_name]
        expected = function.structured_input_signature[1]
        if set(request.inputs) != set(expected):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"inputs {sorted(request.inputs)} do not match the signature's {sorted(expected)}",
            )
        try:
            inputs = {}
            for key, spec in expected.items():
                value = tf.make_ndarray(request.inputs[key])
                inputs[key] = tf.constant(value, dtype=spec.dtype)
            outputs = function(**inputs)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            message = getattr(error, "message", None) or str(error)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = signature_name
        for key in request.output_filter or outputs:
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
        return response


# ------------------------------------------------------- shared test set-up
TEST_CROP = 64
TEST_CROPS = 4
TEST_MAX_PIXELS = 300_000
_CACHE = {}


def shared_data_dir():
    """The shared data folder (env KERAS_ADTRS_SHARED, else ../shared next to the repo)."""
    from pathlib import Path

    env = os.environ.get("KERAS_ADTRS_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def small_exported_model(tmp_path_factory):
    """One crop-64 random-weight model and its export, built once per test session.

    Returns:
        `(model, export_dir, version_dir)`; the export has `TEST_CROPS` crops
        and `max_pixels=TEST_MAX_PIXELS`.
    """
    if "export" not in _CACHE:
        import keras

        import keras_adtrs
        from keras_adtrs.serving.export import export_model

        keras.utils.set_random_seed(0)
        model = random_score_head(keras_adtrs.build_adtrs(crop_size=TEST_CROP, backbone_weights=None, score_offset=50.0))
        export_dir = tmp_path_factory.mktemp("serving_export")
        version_dir = export_model(model, export_dir, num_crops=TEST_CROPS, max_pixels=TEST_MAX_PIXELS)
        _CACHE["export"] = (model, export_dir, version_dir)
    return _CACHE["export"]


def local_score(model, data, num_crops=TEST_CROPS):
    """The reference: decode -> grid crops -> Keras model (eager) -> mean."""
    from keras_adtrs.data.crops_tensorflow import grid_crops
    from keras_adtrs.data.images import decode_image_tensor as decode_image

    crops = grid_crops(decode_image(data), model.crop_size, num_crops)
    return float(tf.reduce_mean(model(crops, training=False)).numpy())


def png_bytes(height, width, seed=0):
    """A random RGB PNG of the given size, as bytes."""
    import numpy as np

    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return tf.io.encode_png(image).numpy()
