"""The exports' contract with their runtimes and clients: names and limits (imports nothing).

`keras_adtrs.serving.export` writes SavedModels with these signatures and
files; `python -m keras_adtrs.export` and the serving client read them
without importing TensorFlow. The LiteRT and ONNX artifacts
(`keras_adtrs.serving.export_litert`, `export_onnx`) take `ARTIFACT_INPUT`
and give `ARTIFACT_OUTPUT`; `keras_adtrs.serving.runtimes` loads them by
these names.
"""

import os

#: Encoded image bytes in (`string [None]`), one score per image out.
DEFAULT_SIGNATURE = "serving_default"
#: Decoded uint8 images of one size in (`uint8 [None, None, None, 3]`), one score per image out.
IMAGES_SIGNATURE = "serving_images"
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
SCORE_OUTPUT = "score"
#: `<version>/assets.extra/` files: TF Serving's warm-up requests, and the export's own record.
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "adtrs_export.json"
#: Largest `height * width` accepted by default; larger images fail with INVALID_ARGUMENT.
DEFAULT_MAX_PIXELS = 40_000_000

#: Names of the LiteRT/ONNX artifacts' input (float32 crops `(B, c, c, 3)` in [0, 255]) and output
#: (float32 `(B,)`): LiteRT signature keys, ONNX graph names.
ARTIFACT_INPUT = "crops"
ARTIFACT_OUTPUT = "score"
#: LiteRT signature written by the export.
LITERT_SIGNATURE = "serving_default"
#: The metadata file of an artifact is `<artifact><METADATA_SUFFIX>`.
METADATA_SUFFIX = ".json"
#: `--runtime` names; `keras` is the `.keras` model itself.
RUNTIMES = ("keras", "litert", "onnx")
#: File extension of each artifact runtime.
EXTENSIONS = {"litert": ".tflite", "onnx": ".onnx"}


def metadata_path(artifact):
    """The metadata file beside an artifact: `<artifact>.json`."""
    return os.fspath(artifact) + METADATA_SUFFIX
