"""keras_adtrs: ADTRS blind image quality assessment for Keras 3.

ADTRS (Attention Down-Sampling Transformer, Relative Ranking and
Self-Consistency; ICIP 2024) predicts the score human viewers would give a
photo, from the photo alone.
"""

from keras_adtrs.console import quiet_tensorflow as _quiet_tensorflow

_quiet_tensorflow()

from keras_adtrs.models.folding import fold_batchnorm  # noqa: E402
from keras_adtrs.models.layers import (  # noqa: E402
    AttentionDownsample,
    ChannelL2Normalize,
    InputNormalization,
    L2Pooling,
    ScoreAffine,
    TopLeftAveragePooling,
)
from keras_adtrs.models.adtrs import ADTRSModel, build_adtrs, build_adtrs_network, load_model  # noqa: E402
from keras_adtrs.version import __version__  # noqa: E402


def score(model, images, crops=9, batch_size=32, **kwargs):
    """Scores images: see `keras_adtrs.inference.scoring.score`."""
    from keras_adtrs.inference.scoring import score as _score

    return _score(model, images, crops=crops, batch_size=batch_size, **kwargs)


__all__ = [
    "ADTRSModel",
    "AttentionDownsample",
    "ChannelL2Normalize",
    "InputNormalization",
    "L2Pooling",
    "ScoreAffine",
    "TopLeftAveragePooling",
    "build_adtrs",
    "build_adtrs_network",
    "fold_batchnorm",
    "load_model",
    "score",
    "__version__",
]
