"""keras_adtrs: ADTRS blind image quality assessment for Keras 3.

ADTRS (Attention Down-Sampling Transformer, Relative Ranking and
Self-Consistency; ICIP 2024) predicts the score human viewers would give a
photo, from the photo alone.

The public names below are imported on first use (PEP 562): `import
keras_adtrs` imports neither Keras nor TensorFlow and starts no TensorFlow
work, so the Keras backend can still be chosen after it. Load a saved model
with `keras_adtrs.load_model(path)`, which registers the custom classes; when
Keras is already imported, `import keras_adtrs` registers them at once, so
`keras.saving.load_model(path)` works after it too.

Example:
>>> import keras_adtrs
>>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)  # doctest: +SKIP
>>> keras_adtrs.score(model, ["photo.jpg"])  # doctest: +SKIP
"""

import importlib
import sys

from keras_adtrs.version import __version__

#: Public name -> the module that defines it.
_PUBLIC = {
    "ADTRSBackbone": "keras_adtrs.models.backbone",
    "ADTRSModel": "keras_adtrs.models.adtrs",
    "build_adtrs": "keras_adtrs.models.factory",
    "load_model": "keras_adtrs.models.saving",
    "fold_batchnorm": "keras_adtrs.models.folding",
    "AttentionDownsample": "keras_adtrs.models.layers",
    "ChannelL2Normalize": "keras_adtrs.models.layers",
    "InputNormalization": "keras_adtrs.models.layers",
    "L2Pooling": "keras_adtrs.models.layers",
    "ScoreAffine": "keras_adtrs.models.layers",
    "TopLeftAveragePooling": "keras_adtrs.models.layers",
    "score": "keras_adtrs.models.scoring",
    "quality_map": "keras_adtrs.inference.quality_map",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


if "keras" in sys.modules:
    # Keras is in use already: register the custom classes now, so that
    # `import keras; import keras_adtrs; keras.saving.load_model(path)` works.
    importlib.import_module("keras_adtrs.models")
