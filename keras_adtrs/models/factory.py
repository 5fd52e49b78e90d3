"""Building ADTRS models from flat settings: `build_adtrs`, and `with_precision`.

`build_adtrs(...)` builds an `ADTRSBackbone`, loads its weights (ImageNet,
a local file, or a saved ADTRS model's backbone with `init_from`) and puts
the scoring task on it. `with_precision(model, precision)` rebuilds a model
to compute in another precision with the same weights.
"""

from keras_adtrs.defaults import SCORING_PRECISION
from keras_adtrs.errors import SettingError
from keras_adtrs.models.adtrs import ADTRSModel
from keras_adtrs.models.backbone import ADTRSBackbone
from keras_adtrs.models.precision import check_precision, choose_precision
from keras_adtrs.models.weights import copy_backbone, load_backbone_weights

#: `build_adtrs` keywords that configure the backbone (the rest go to `ADTRSModel`).
BACKBONE_KEYWORDS = ("dropout_rate", "num_heads", "key_dim", "attn_ratio", "batchnorm_momentum")


def build_adtrs(
    crop_size=224,
    backbone_weights="imagenet",
    layer4_pooling="global",
    backbone="resnet50",
    input_normalization="auto",
    init_from=None,
    precision=None,
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
        backbone: str. The architecture: `"resnet50"` or `"resnet50_v1_5"`.
            Defaults to `"resnet50"`.
        input_normalization: str or None. Defaults to `"auto"` (the backbone
            weights' own).
        init_from: str or None. A `.keras` file holding an ADTRS backbone (a
            backbone saved alone, `python -m keras_adtrs.pretrain`'s
            `model.keras`, any training run's): its backbone's weights (the
            ResNet stages and the attention block) are copied in, the head
            starts afresh (`keras_adtrs.models.weights.copy_backbone`). Then
            `backbone_weights` must be `"imagenet"` (the default, not
            downloaded) or None. Defaults to `None`.
        precision: str or None. `"float32"`, `"mixed_bfloat16"` (CPUs with
            AVX512-BF16 or AMX, TPUs, recent GPUs), `"mixed_float16"`
            (GPUs), or `"auto"` (`mixed_bfloat16` where this machine runs
            bfloat16 fast, else `float32`; the model records the choice);
            checked against this machine
            (`keras_adtrs.models.precision.check_precision`: a precision the
            device lacks raises `UnsupportedPrecisionError`). The score head
            and the loss stay float32. Defaults to `None`: Keras' global dtype
            policy (float32 unless set).
        **kwargs: further settings: the backbone's (`dropout_rate`,
            `num_heads`, `key_dim`, `attn_ratio`, `batchnorm_momentum`) and
            the task's (`score_scale`, `score_offset`, `loss_weights`,
            `consistency_flip_back`, `l2_weight_decay`).

    Returns:
        An `ADTRSModel` taking RGB crops in [0, 255] and returning one score
        per crop.

    Example:
    >>> model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    >>> model(np.zeros((2, 64, 64, 3))).shape
    (2,)
    """
    if precision is not None:
        precision = check_precision(precision)  # `auto`: the precision chosen for this machine
    if init_from is not None and backbone_weights not in (None, "none", "imagenet"):
        raise SettingError("init_from", f"and backbone_weights ({backbone_weights!r}) both set the backbone's "
                           "weights: pass one")
    backbone_settings = {name: kwargs.pop(name) for name in BACKBONE_KEYWORDS if name in kwargs}
    features = ADTRSBackbone(crop_size=crop_size, architecture=backbone, input_normalization=input_normalization,
                             precision=precision, **backbone_settings)
    model = ADTRSModel(backbone=features, layer4_pooling=layer4_pooling, **kwargs)
    if init_from is None:
        model.backbone_weights_info = load_backbone_weights(features, backbone_weights)
        return model
    info = copy_backbone(init_from, features)
    model.backbone_weights_info = {"requested": f"init_from {info['path']}", "source": f"init_from {info['path']}",
                                   "init_from": info}
    return model


def in_scoring_precision(model, precision=None):
    """`(model, why)`: `model` computing in `precision` for scoring, and what chose it.

    Args:
        model: an `ADTRSModel`.
        precision: str or None. A precision name, `"auto"`, or None for
            `keras_adtrs.defaults.SCORING_PRECISION` (what the predict and
            evaluate commands use unless told).

    Returns:
        The model (a copy when its precision changes) and, for `auto`, a line
        saying what it chose and why (None otherwise).
    """
    chosen, why = choose_precision(SCORING_PRECISION if precision is None else precision)
    return with_precision(model, chosen), why


def with_precision(model, precision):
    """`model` computing in `precision`: a copy with the same weights, or `model` itself when it already does.

    Every precision keeps its variables in float32, so the weights carry over
    unchanged; only the layers' compute type changes (for instance a float32
    model served in bfloat16). Not checked against this machine (an export
    may target another one).

    Args:
        model: an `ADTRSModel` (not a folded inference copy: convert first,
            then fold).
        precision: str. One of `keras_adtrs.models.precision.PRECISIONS`, or
            `"auto"` (chosen for this machine).

    Returns:
        An `ADTRSModel`.

    Example:
    >>> serving = with_precision(model, "mixed_bfloat16")  # doctest: +SKIP
    """
    precision = choose_precision(precision)[0]
    if model.precision == precision:
        return model
    if model.batchnorm_folded:
        raise ValueError("this model is a folded inference copy: change the precision of the original, then fold")
    config = model.get_config()
    config["backbone"] = {**config["backbone"], "config": {**config["backbone"]["config"], "precision": precision}}
    copy = ADTRSModel.from_config(config)
    copy.set_weights(model.get_weights())
    copy.backbone_weights_info = dict(model.backbone_weights_info)
    return copy
