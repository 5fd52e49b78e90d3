"""The one decision of "TensorFlow ops or numpy and Pillow", taken from the Keras backend.

`uses_tensorflow()` is what every data path asks before it decodes, crops or
reads a data set: image decoding (`keras_adtrs.data.images`), the crop
dispatch (`keras_adtrs.data.image_crops`) and the data set registry
(`keras_adtrs.data.registry`: TFDS builders or plain readers). The answer
depends on the Keras backend only, never on what happens to be imported:

- Keras already imported: its backend (`keras.backend.backend()`);
- otherwise the backend Keras will take: `$KERAS_BACKEND`, else the
  `backend` of `$KERAS_HOME/keras.json` (`~/.keras/keras.json`), else
  `tensorflow`, Keras' own default;

and TensorFlow must be installed. So on the TensorFlow backend images are
decoded and cropped by the SavedModel's own ops, and on JAX by Pillow and
numpy without importing TensorFlow, whatever the import order.

Example:
>>> import os
>>> os.environ["KERAS_BACKEND"] = "jax"  # doctest: +SKIP
>>> uses_tensorflow()  # doctest: +SKIP
False
"""

import importlib.util
import json
import os
import sys


def keras_backend():
    """The Keras backend in use, or the one Keras will use when it is imported."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            backend = json.load(handle).get("backend")
    except (OSError, ValueError, AttributeError):
        backend = None
    return backend or "tensorflow"


def uses_tensorflow():
    """Whether decoding, crops and data sets use TensorFlow: the TensorFlow backend, with TensorFlow installed."""
    return keras_backend() == "tensorflow" and importlib.util.find_spec("tensorflow") is not None
