"""Inference copies of an ADTRS model with BatchNorm folded into the convolutions.

At inference a BatchNormalization layer is an affine map per channel,
`y = (x - mean) * gamma / sqrt(var + eps) + beta`. When it directly follows a
`Conv2D` (and is that convolution's only consumer) it can be folded into the
convolution: `kernel * s` and `(bias - mean) * s + beta` with
`s = gamma / sqrt(var + eps)`. Keras computes the normalisation as separate
multiply and add ops over the whole feature map; TensorFlow's graph optimiser
cannot fuse those into the convolution, but it does fuse a convolution with its
bias and ReLU, so folding the backbone's 53 pairs makes inference faster (the
measured gain, machine and command are in docs/benchmarks.md).

`fold_batchnorm(model)` returns a folded *copy* for scoring and serving; the
model passed in is not touched. The copy:

- gives the same outputs up to float rounding (measured: within 2.5e-6 of
  each tensor's largest value; the folded weights are computed in float64
  and rounded once);
- keeps every layer and variable: each folded BatchNorm is set to the identity
  (`gamma = 1`, `beta = 0`, `mean = 0`, `var = 1 - eps`) and skipped. A
  `.keras` file of the copy therefore loads as an ordinary model with the same
  scores; for a convolution without a bias (the torchvision-layout backbone)
  the shift stays in the BatchNorm's `beta` and the layer adds it;
- cannot be trained (`fit` raises): the folded statistics are no longer batch
  statistics. Train the original and fold again.

Backend-neutral (numpy on the weights, `keras.ops` in the calls).
"""

import types

import numpy as np
from keras import ops

from keras_adtrs.models.adtrs import ADTRSModel
from keras_adtrs.models.graph_folding import FOLDED_FLAG, conv_batchnorm_pairs, unfold_in_graph

__all__ = ["conv_batchnorm_pairs", "fold_batchnorm", "fold_pair", "folded_for_inference"]


def _identity_call(self, inputs, training=None, mask=None):
    return inputs


def _shift_call(self, inputs, training=None, mask=None):
    return ops.add(inputs, ops.cast(self.beta, inputs.dtype))


def fold_pair(conv, batchnorm):
    """Folds `batchnorm` into `conv` in place (inference only).

    Returns False, changing nothing, when neither the conv's bias nor the
    BatchNorm's beta can hold the shift; True otherwise.
    """
    if not conv.use_bias and not batchnorm.center:
        return False
    unfold_in_graph(conv, batchnorm)
    channels = conv.kernel.shape[-1]
    mean = ops.convert_to_numpy(batchnorm.moving_mean).astype("float64")
    variance = ops.convert_to_numpy(batchnorm.moving_variance).astype("float64")
    gamma = ops.convert_to_numpy(batchnorm.gamma).astype("float64") if batchnorm.scale else np.ones(channels)
    beta = ops.convert_to_numpy(batchnorm.beta).astype("float64") if batchnorm.center else np.zeros(channels)
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    kernel = ops.convert_to_numpy(conv.kernel).astype("float64")
    conv.kernel.assign((kernel * scale).astype(conv.kernel.dtype))
    identity = {
        "moving_mean": np.zeros(channels),
        "moving_variance": np.full(channels, 1.0 - batchnorm.epsilon),
    }
    if batchnorm.scale:
        identity["gamma"] = np.ones(channels)
    if conv.use_bias:
        bias = ops.convert_to_numpy(conv.bias).astype("float64")
        conv.bias.assign(((bias - mean) * scale + beta).astype(conv.bias.dtype))
        if batchnorm.center:
            identity["beta"] = np.zeros(channels)
        batchnorm.call = types.MethodType(_identity_call, batchnorm)
    else:  # no bias: the BatchNorm's beta holds the shift
        identity["beta"] = beta - mean * scale
        batchnorm.call = types.MethodType(_shift_call, batchnorm)
    for name, value in identity.items():
        variable = getattr(batchnorm, name)
        variable.assign(value.astype(variable.dtype))
    return True


def folded_for_inference(model):
    """`fold_batchnorm(model)` for an unfolded `ADTRSModel`; any other model as it is.

    What the inference commands (`predict`, `evaluate`) and the export use.
    """
    if isinstance(model, ADTRSModel) and not model.batchnorm_folded:
        return fold_batchnorm(model)
    return model


def fold_batchnorm(model):
    """An inference copy of `model` with BatchNorm folded into the convolutions.

    Args:
        model: an `ADTRSModel`. It is not modified.

    Returns:
        A new `ADTRSModel` with the same scores up to float rounding;
        `copy.batchnorm_folded` is the number of folded pairs (53 for the
        `resnet50` backbone). `fit` on the copy raises.

    Example:
    >>> fast = fold_batchnorm(model)  # doctest: +SKIP
    >>> keras_adtrs.score(fast, ["photo.jpg"])  # doctest: +SKIP
    """
    if not isinstance(model, ADTRSModel):
        raise TypeError(f"fold_batchnorm takes an ADTRSModel, got {type(model).__name__}")
    if model.batchnorm_folded:
        raise ValueError("this model is already a folded inference copy")
    copy = ADTRSModel.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.backbone_weights_info = dict(model.backbone_weights_info)
    copy.batchnorm_folded = sum(fold_pair(conv, bn) for conv, bn in conv_batchnorm_pairs(copy.network))
    copy.batchnorm_folded_in_graph = sum(getattr(bn, FOLDED_FLAG, False) for _, bn in conv_batchnorm_pairs(copy.network))
    return copy
