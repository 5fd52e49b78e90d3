"""The export's contract with TF Serving and its clients: names and limits (imports nothing).

`keras_adtrs.serving.export` writes SavedModels with these signatures and
files; `python -m keras_adtrs.export` and the serving client read them
without importing TensorFlow.
"""

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
