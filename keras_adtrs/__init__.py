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
from keras_adtrs.models.adtrs import ADTRSModel, build_adtrs_network  # noqa: E402
from keras_adtrs.version import __version__  # noqa: E402


def build_adtrs(
    crop_size=224,
    backbone_weights="imagenet",
    layer4_pooling="global",
    backbone="resnet50",
    input_normalization="auto",
    **kwargs,
):
    """Builds an ADTRS model and loads its backbone weights.

    Args:
        crop_size: int. Square crop side, a multiple of 32 from 64 to 512.
            Defaults to `224`.
        backbone_weights: `"imagenet"` (downloaded by Keras; when that fails a
            warning is printed and the backbone keeps random weights), a path
            to a local weights file, or `None`/`"none"`. Defaults to
            `"imagenet"`. What happened is in `model.backbone_weights_info`.
        layer4_pooling: str. `"global"` or `"top_left"` (the authors' quirk).
            Defaults to `"global"`.
        backbone: str. `"resnet50"` or `"resnet50_v1_5"`. Defaults to
            `"resnet50"`.
        input_normalization: str or None. Defaults to `"auto"` (the backbone
            weights' own).
        **kwargs: further `ADTRSModel` arguments.

    Returns:
        An `ADTRSModel` taking RGB crops in [0, 255] and returning one score
        per crop.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    >>> model(np.zeros((2, 64, 64, 3))).shape
    (2,)
    """
    from keras_adtrs.models.weights import load_backbone_weights

    model = ADTRSModel(
        crop_size=crop_size,
        backbone=backbone,
        layer4_pooling=layer4_pooling,
        input_normalization=input_normalization,
        **kwargs,
    )
    model.backbone_weights_info = load_backbone_weights(model, backbone_weights)
    return model


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
    "score",
    "__version__",
]
