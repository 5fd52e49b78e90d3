"""Serving and deployment: the SavedModel for TensorFlow Serving, LiteRT and ONNX exports, the gRPC client.

`export.export_model` writes the SavedModel (TensorFlow-only module);
`export_litert.export_litert` and `export_onnx.export_onnx` write LiteRT and
ONNX files (TensorFlow-only modules); `artifacts` holds what their metadata
records and which formats and quantisations go together; `signatures` names
the SavedModel's signatures, inputs and limits; `client.ServingClient` scores
files against a running server (`python -m keras_adtrs.serving.client`).
`serving/` at the repository root holds the TF Serving configuration.

Example:
>>> from keras_adtrs.serving import ServingClient
>>> ServingClient("localhost:8500", "adtrs").score_files(["a.jpg"])  # doctest: +SKIP
"""

__all__ = ["ServingClient", "ServingError"]


def __getattr__(name):
    # Lazy, so `python -m keras_adtrs.serving.client` does not import the
    # module twice (and gRPC is only loaded when used).
    if name in __all__:
        from keras_adtrs.serving import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
