"""The ADTRS model: registered layers, the backbone and the task, the objective, training steps, folding, conversion.

Importing this package registers every serializable class (the layers,
`ADTRSBackbone`, `ADTRSModel` and `PartwiseAdam`, under the names
`"keras_adtrs>ClassName"`), so that `keras.saving.load_model` finds them;
`load_model` does both.

Inside the package imports run one way: `backbone` (the feature extractor)
imports `layers`, `backbones` and `precision`; `adtrs` (the scoring task)
imports `backbone`, `objective` and `fine_tuning`; `factory` (`build_adtrs`)
imports `adtrs` and `weights`; the training steps (`step_tensorflow`,
`step_jax`) import `objective` only and are imported by the task when it
trains; `scoring`, `folding`, `pretraining` and `conversion` build on them.
"""

from keras_adtrs.models.adtrs import ADTRSModel
from keras_adtrs.models.backbone import ADTRSBackbone
from keras_adtrs.models.factory import build_adtrs, in_scoring_precision, with_precision
from keras_adtrs.models.layers import (
    AttentionDownsample,
    ChannelL2Normalize,
    InputNormalization,
    L2Pooling,
    ScoreAffine,
    TopLeftAveragePooling,
)
from keras_adtrs.models.saving import LOAD_ERRORS, load_model

__all__ = [
    "ADTRSBackbone",
    "ADTRSModel",
    "LOAD_ERRORS",
    "AttentionDownsample",
    "ChannelL2Normalize",
    "InputNormalization",
    "L2Pooling",
    "ScoreAffine",
    "TopLeftAveragePooling",
    "build_adtrs",
    "load_model",
    "in_scoring_precision",
    "with_precision",
]
