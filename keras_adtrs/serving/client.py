"""gRPC client for an ADTRS model served by TensorFlow Serving.

`ServingClient` asks the server for the model's signature (input and output
names and dtypes come from `GetModelMetadata`, nothing is hard-coded), sends
files in batches as `PredictRequest`s and returns one row per file, the same
rows as `python -m keras_adtrs.predict --format json`:
`{"path": p, "score": s}` or `{"path": p, "error": "message"}`.

Failure handling:

- Every call carries a deadline (`timeout` seconds).
- `UNAVAILABLE` (server starting, restarting, unreachable, or its batching
  queue full) is retried up to `max_retries` times with exponential backoff
  and jitter: the request never reached the model, and scoring is
  idempotent, so retrying is safe.
- `DEADLINE_EXCEEDED` is NOT retried: the timeout is the caller's bound on
  waiting, and resending the same request to a server that is already too
  slow only adds load. The files of that request get an error row; raise
  `--timeout` or lower `batch_size`.
- `INVALID_ARGUMENT` on a batch of several files (one malformed or oversized
  image fails the whole request) is retried file by file, so one bad file
  does not sink the others; the bad file gets the server's message.
- A file that cannot be read gets an error row and is not sent.

Command line:

```
python -m keras_adtrs.serving.client --server HOST:PORT --model NAME \\
    [--signature NAME] [--format table|csv|json] [--timeout S] PATHS...
```
Folders are expanded recursively (image files only), globs are expanded;
the exit status is 1 when any file failed, 2 when the server could not be
used at all.
"""

import argparse
import importlib
import os
import random
import sys
import threading
import time

import grpc
import numpy as np

from keras_adtrs import console
from keras_adtrs.data.images import ImageReadError, expand_paths, load_image
from keras_adtrs.reporting import format_rows
from keras_adtrs.serving.signatures import DEFAULT_SIGNATURE


class _Protos:
    """TensorFlow's and TensorFlow Serving's protocol buffers, imported on first use.

    Importing them imports all of TensorFlow; `main()` first silences its
    start-up log lines (`keras_adtrs.console`), so they load after that.
    """

    _MODULES = {
        "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
        "tensor_shape_pb2": "tensorflow.core.framework.tensor_shape_pb2",
        "types_pb2": "tensorflow.core.framework.types_pb2",
        "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
        "predict_pb2": "tensorflow_serving.apis.predict_pb2",
        "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    }

    def __getattr__(self, name):
        if name not in self._MODULES:
            raise AttributeError(name)
        module = importlib.import_module(self._MODULES[name])
        setattr(self, name, module)
        return module


pb = _Protos()


RETRIED_CODES = (grpc.StatusCode.UNAVAILABLE,)


def _float_outputs():
    """Float output dtypes -> `(numpy dtype, TensorProto value field)`."""
    types = pb.types_pb2
    return {types.DT_FLOAT: (np.float32, "float_val"), types.DT_DOUBLE: (np.float64, "double_val")}


class ServingError(RuntimeError):
    """The server could not be used at all (metadata, model or signature)."""


def _status_message(error):
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    name = code.name if code is not None else "ERROR"
    return f"{name}: {details}"


def _string_tensor(values):
    shape = pb.tensor_shape_pb2.TensorShapeProto(dim=[pb.tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    return pb.tensor_pb2.TensorProto(dtype=pb.types_pb2.DT_STRING, tensor_shape=shape, string_val=values)


def _uint8_tensor(array):
    shape = pb.tensor_shape_pb2.TensorShapeProto(dim=[pb.tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape])
    return pb.tensor_pb2.TensorProto(
        dtype=pb.types_pb2.DT_UINT8, tensor_shape=shape, tensor_content=np.ascontiguousarray(array, np.uint8).tobytes()
    )


def _float_values(proto):
    """A float TensorProto (tensor_content or typed values) -> flat float64 array."""
    floats = _float_outputs()
    if proto.dtype not in floats:
        raise ServingError(f"output dtype {pb.types_pb2.DataType.Name(proto.dtype)} is not a float type")
    dtype, field = floats[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype).astype(np.float64)
    values = np.asarray(getattr(proto, field), np.float64)
    size = int(np.prod([d.size for d in proto.tensor_shape.dim])) if proto.tensor_shape.dim else values.size
    if values.size == 1 and size > 1:  # TF's compact form repeats a single value
        values = np.repeat(values, size)
    return values


class ServingClient:
    """Scores image files with an ADTRS model on TensorFlow Serving (gRPC).

    Args:
        target: str. `"host:port"` of TF Serving's gRPC port (8500).
        model_name: str. The served model's name.
        signature_name: str. Defaults to `"serving_default"` (encoded image
            bytes in). A signature taking `uint8` images (`"serving_images"`)
            also works: files are then decoded here and sent one size group
            at a time.
        timeout: float. Deadline of every call, in seconds. Defaults to `10.0`.
        max_retries: int. Retries of a call answered `UNAVAILABLE`.
            Defaults to `3`.
        batch_size: int. Files per request. Defaults to `16`.
        backoff: float. First retry delay in seconds, doubled each retry (with
            up to 50% jitter). Defaults to `0.2`.
        max_batch_bytes: int. A request holds fewer files when their bytes
            would exceed this. Defaults to 32 MiB.
        channel: a `grpc.Channel` to use instead of opening one to `target`.

    Example:
    >>> client = ServingClient("localhost:8500", "adtrs")  # doctest: +SKIP
    >>> client.score_files(["a.jpg", "missing.png"])  # doctest: +SKIP
    [{'path': 'a.jpg', 'score': 61.2}, {'path': 'missing.png', 'error': '...'}]
    """

    def __init__(
        self,
        target,
        model_name,
        signature_name=DEFAULT_SIGNATURE,
        timeout=10.0,
        max_retries=3,
        batch_size=16,
        backoff=0.2,
        max_batch_bytes=32 * 2**20,
        channel=None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.target = target
        self.model_name = model_name
        self.signature_name = signature_name
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.batch_size = int(batch_size)
        self.backoff = float(backoff)
        self.max_batch_bytes = int(max_batch_bytes)
        self._own_channel = channel is None
        self.channel = channel or grpc.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.stub = pb.prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._signature = None
        self._lock = threading.Lock()

    def close(self):
        """Closes the channel (when the client opened it)."""
        if self._own_channel:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------- calls
    def _call(self, method, request):
        """One unary call with a deadline, retrying `UNAVAILABLE` with backoff."""
        attempt = 0
        while True:
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() not in RETRIED_CODES or attempt >= self.max_retries:
                    raise
                delay = self.backoff * (2**attempt)
                time.sleep(delay * (1 + 0.5 * random.random()))
                attempt += 1

    def signature(self):
        """`(input_name, input_dtype, output_name)` of the signature, from `GetModelMetadata`.

        Raises:
            ServingError: the metadata cannot be fetched, the signature does
                not exist or does not have one input and one float output.
        """
        with self._lock:
            if self._signature is None:
                self._signature = self._fetch_signature()
            return self._signature

    def _fetch_signature(self):
        request = pb.get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.model_name
        request.metadata_field.append("signature_def")
        try:
            response = self._call(self.stub.GetModelMetadata, request)
        except grpc.RpcError as error:
            raise ServingError(
                f"cannot read the metadata of model {self.model_name!r} at {self.target}: {_status_message(error)}"
            ) from error
        signature_map = pb.get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signature_map):
            raise ServingError("the server's metadata holds no SignatureDefMap")
        if self.signature_name not in signature_map.signature_def:
            names = sorted(k for k in signature_map.signature_def if not k.startswith("__"))
            raise ServingError(f"model {self.model_name!r} has no signature {self.signature_name!r}; it has {names}")
        signature = signature_map.signature_def[self.signature_name]
        if len(signature.inputs) != 1:
            raise ServingError(f"signature {self.signature_name!r} has inputs {sorted(signature.inputs)}; need exactly one")
        (input_name, input_info), = signature.inputs.items()
        if input_info.dtype not in (pb.types_pb2.DT_STRING, pb.types_pb2.DT_UINT8):
            raise ServingError(
                f"input {input_name!r} is {pb.types_pb2.DataType.Name(input_info.dtype)}; need DT_STRING (encoded "
                "images) or DT_UINT8 (decoded images)"
            )
        floats = [k for k, v in signature.outputs.items() if v.dtype in _float_outputs()]
        if len(floats) != 1:
            raise ServingError(
                f"signature {self.signature_name!r} has outputs {sorted(signature.outputs)}; need exactly one float output"
            )
        return input_name, input_info.dtype, floats[0]

    def _predict(self, values):
        """Scores for `values` (bytes, or one same-size uint8 array) in one request."""
        input_name, input_dtype, output_name = self.signature()
        request = pb.predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        if input_dtype == pb.types_pb2.DT_STRING:
            request.inputs[input_name].CopyFrom(_string_tensor(values))
            count = len(values)
        else:
            request.inputs[input_name].CopyFrom(_uint8_tensor(values))
            count = values.shape[0]
        request.output_filter.append(output_name)
        response = self._call(self.stub.Predict, request)
        scores = _float_values(response.outputs[output_name])
        if scores.size != count:
            raise ServingError(f"server returned {scores.size} scores for {count} images")
        return [float(s) for s in scores]

    # -------------------------------------------------------------- scoring
    def score_bytes(self, items):
        """Scores `(key, bytes)` pairs; returns `{key: score or error}` rows keyed by `key`.

        Args:
            items: list of `(key, bytes)` of encoded images.

        Returns:
            dict key -> `{"score": float}` or `{"error": str}`.
        """
        results = {}
        input_dtype = self.signature()[1]
        if input_dtype == pb.types_pb2.DT_UINT8:
            return self._score_decoded(items)
        for batch in self._batches(items):
            self._score_batch(batch, results)
        return results

    def _batches(self, items):
        batch, size = [], 0
        for key, data in items:
            if batch and (len(batch) >= self.batch_size or size + len(data) > self.max_batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append((key, data))
            size += len(data)
        if batch:
            yield batch

    def _score_batch(self, batch, results, split_on_invalid=True):
        try:
            scores = self._predict([data for _, data in batch])
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(batch) > 1 and split_on_invalid:
                for item in batch:
                    self._score_batch([item], results, split_on_invalid=False)
                return
            for key, _ in batch:
                results[key] = {"error": _status_message(error)}
            return
        except ServingError as error:
            for key, _ in batch:
                results[key] = {"error": str(error)}
            return
        for (key, _), value in zip(batch, scores):
            results[key] = {"score": value}

    def _score_decoded(self, items):
        # uint8 signature: decode here with the shared rule (keras_adtrs.data.images), group by size.
        results, groups = {}, {}
        for key, data in items:
            try:
                image = load_image(data, decoder="tensorflow")
            except ImageReadError as error:
                results[key] = {"error": f"cannot decode image: {error}"}
                continue
            groups.setdefault(image.shape, []).append((key, image))
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                part = group[start : start + self.batch_size]
                try:
                    scores = self._predict(np.stack([image for _, image in part]))
                except (grpc.RpcError, ServingError) as error:
                    message = _status_message(error) if isinstance(error, grpc.RpcError) else str(error)
                    for key, _ in part:
                        results[key] = {"error": message}
                    continue
                for (key, _), value in zip(part, scores):
                    results[key] = {"score": value}
        return results

    def score_files(self, paths):
        """Scores image files; one row per path, in order.

        Args:
            paths: list of str. Image files (JPEG, PNG, BMP, GIF).

        Returns:
            list of dict: `{"path": p, "score": float}` or
            `{"path": p, "error": "message"}`.

        Raises:
            ServingError: the model's signature cannot be read (the server is
                down after all retries, the model or signature is missing).

        Example:
        >>> ServingClient("localhost:8500", "adtrs").score_files(["a.jpg"])  # doctest: +SKIP
        [{'path': 'a.jpg', 'score': 61.2}]
        """
        paths = [os.fspath(p) for p in paths]
        self.signature()  # fail early, once, when the server cannot be used
        rows = [None] * len(paths)
        items = []
        for index, path in enumerate(paths):
            try:
                with open(path, "rb") as f:
                    items.append((index, f.read()))
            except OSError as error:
                rows[index] = {"path": path, "error": f"cannot read file: {error.strerror or error}"}
        for index, result in self.score_bytes(items).items():
            rows[index] = {"path": paths[index], **result}
        return rows


# --------------------------------------------------------------------- CLI
def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.serving.client",
        description="Score images with an ADTRS model on TensorFlow Serving (gRPC).",
    )
    parser.add_argument("--server", required=True, help="HOST:PORT of the gRPC port (TF Serving: 8500)")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--signature", default=DEFAULT_SIGNATURE, help=f"signature name (default: {DEFAULT_SIGNATURE})")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format, as predict (default: table)")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline per call in seconds (default: 10)")
    parser.add_argument("--retries", type=int, default=3, help="retries of UNAVAILABLE calls (default: 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="files per request (default: 16)")
    parser.add_argument("paths", nargs="+", metavar="PATHS", help="image files, folders (recursive) or globs")
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status (0, 1 if a file failed, 2 if the server failed).

    Args:
        argv: list of str or None. Arguments (default: `sys.argv[1:]`).

    Example:
    >>> main(["--server", "localhost:8500", "--model", "adtrs", "photos/"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    console.quiet_tensorflow()  # the protocol buffers import TensorFlow
    files = expand_paths(args.paths)
    client = ServingClient(
        args.server,
        args.model,
        signature_name=args.signature,
        timeout=args.timeout,
        max_retries=args.retries,
        batch_size=args.batch_size,
    )
    try:
        rows = client.score_files(files) if files else []
    except ServingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(format_rows(rows, args.format))
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
