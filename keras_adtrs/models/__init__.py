"""The ADTRS model: registered layers, backbones, the objective, training steps, folding, conversion.

Importing this package registers every serializable class (the layers and
`ADTRSModel`, under the names `"keras_adtrs>ClassName"`), so that
`keras.saving.load_model` finds them; `load_model` does both.

Inside the package imports run one way: `adtrs` (the model) imports `layers`,
`backbones`, `objective` and `weights`; the training steps (`step_tensorflow`,
`step_jax`) import `objective` only and are imported by the model when it
trains; `folding` and `conversion` import the model.
"""

from keras_adtrs.models.adtrs import LOAD_ERRORS, ADTRSModel, build_adtrs, build_adtrs_network, load_model
from keras_adtrs.models.layers import (
    AttentionDownsample,
    ChannelL2Normalize,
    InputNormalization,
    L2Pooling,
    ScoreAffine,
    TopLeftAveragePooling,
)

__all__ = [
    "ADTRSModel",
    "LOAD_ERRORS",
    "AttentionDownsample",
    "ChannelL2Normalize",
    "InputNormalization",
    "L2Pooling",
    "ScoreAffine",
    "TopLeftAveragePooling",
    "build_adtrs",
    "build_adtrs_network",
    "load_model",
]
