"""Serving an exported ADTRS model: the TensorFlow Serving gRPC client.

`keras_adtrs.serving.export.export_model` writes the SavedModel; `serving/` at the
repository root holds the TF Serving configuration; `ServingClient` scores
files against a running server.

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
