"""BatchNorm folded into its convolution inside every inference call.

`keras_adtrs.fold_batchnorm` makes a folded *copy* of a model once, for the
commands and the exports. A model used as it is (`model.predict`,
`keras_adtrs.score`, `evaluate_model`, a notebook's `model(x)`) would
otherwise run each of the backbone's 53 BatchNorm layers as separate
elementwise passes over the feature map. Under `mixed_bfloat16` that costs
most: Keras computes BatchNorm in float32, so each layer also casts the map
up and back. `fold_in_graph(network)` makes every foldable
`(Conv2D, BatchNormalization)` pair compute, at inference,

    conv(x, kernel * s) + (bias - mean) * s + beta,   s = gamma / sqrt(var + eps)

in one convolution with its bias, the BatchNorm passing its input through
(TensorFlow's graph optimiser then fuses the ReLU after it, or the residual
add and the ReLU, into that convolution, in float32 and bfloat16 alike). `s` and the
shift are computed in float32 from the current variables at every call, and
the kernel is scaled in the layer's compute dtype, so the folding is never
stale: train, load or assign weights and the next call uses them. It costs one multiply over the
kernel per call, which is why the commands and the exports still fold a copy
once (the measured speeds of both are in docs/benchmarks.md).

In training (`training=True`) both layers run their own calls, so the
gradients, the batch statistics and the moving averages are unchanged. The
BatchNorm's training call may be replaced afterwards (the TensorFlow training
step switches to the fused kernel,
`keras_adtrs.models.fused_batchnorm_tensorflow`): such calls pass their input
through at inference when the layer has `folded_in_graph` set.

The layers, variables, configs and the `.keras` format are unchanged: only
instance-level calls are set. Reading float32 weights inside a mixed-precision
call needs Keras' `AutocastScope` (`keras.src.backend`, not public API).

Backend-neutral (`keras.ops`).
"""

import inspect
import types

import keras
from keras import ops
from keras.src.backend import AutocastScope  # no public equivalent in Keras 3

#: Attribute set on a BatchNormalization whose inference is folded into its convolution.
FOLDED_FLAG = "folded_in_graph"


def conv_batchnorm_pairs(model):
    """`(Conv2D, BatchNormalization)` pairs inside `model` that can be folded.

    A pair: the BatchNorm normalises the last axis, is called once, on the
    output of a plain `Conv2D` with a linear activation that is called once and
    whose output feeds nothing else. Layers inside custom layers (the attention
    block) are not graph nodes and are left alone.
    """
    pairs = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is not keras.layers.BatchNormalization or layer.axis not in (-1, 3):
            continue
        if len(layer._inbound_nodes) != 1 or len(layer._inbound_nodes[0].parent_nodes) != 1:
            continue
        conv = layer._inbound_nodes[0].parent_nodes[0].operation
        if (
            type(conv) is keras.layers.Conv2D
            and conv.activation is keras.activations.linear
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
        ):
            pairs.append((conv, layer))
    return pairs


def folded_weights(conv, batchnorm, dtype="float32"):
    """`(kernel, shift)` of `conv` followed by `batchnorm` at inference.

    The per-channel scale and the shift are computed in float32 from the
    current variables (even inside a mixed-precision call); the kernel is
    scaled in `dtype`: in float32 it is rounded once, in a 16-bit compute
    dtype the kernel is cast first and scaled there, which rounds it twice
    but halves the memory the multiply reads and writes at every call.
    """
    with AutocastScope(None):
        scale = ops.rsqrt(ops.add(ops.cast(batchnorm.moving_variance, "float32"), batchnorm.epsilon))
        if batchnorm.scale:
            scale = ops.multiply(scale, ops.cast(batchnorm.gamma, "float32"))
        shift = ops.negative(ops.multiply(ops.cast(batchnorm.moving_mean, "float32"), scale))
        if batchnorm.center:
            shift = ops.add(shift, ops.cast(batchnorm.beta, "float32"))
        if conv.use_bias:
            shift = ops.add(shift, ops.multiply(ops.cast(conv.bias, "float32"), scale))
        kernel = ops.multiply(ops.cast(conv.kernel, dtype), ops.cast(scale, dtype))
    return kernel, shift


def _folded_conv_call(batchnorm):
    def call(self, inputs, training=None):
        if training:
            return type(self).call(self, inputs)
        kernel, shift = folded_weights(self, batchnorm, self.compute_dtype)
        outputs = self.convolution_op(inputs, kernel)
        return ops.add(outputs, ops.cast(shift, outputs.dtype))

    return call


def _pass_through_at_inference(self, inputs, training=None, mask=None):
    if training:
        return type(self).call(self, inputs, training=training, mask=mask)
    return inputs


def set_call(layer, function):
    """Sets an instance-level `call` and what Keras reads of its signature."""
    layer.call = types.MethodType(function, layer)
    layer._call_signature = inspect.signature(layer.call)
    layer.call_signature_parameters = list(layer._call_signature.parameters)
    layer._call_has_training_arg = "training" in layer.call_signature_parameters
    layer._call_has_mask_arg = "mask" in layer.call_signature_parameters
    layer._call_has_context_arg = {
        name: name in layer.call_signature_parameters for name in getattr(layer, "_call_context_args", ("training",))
    }


def fold_in_graph(network):
    """Folds every foldable BatchNorm of `network` into its convolution at inference calls.

    Args:
        network: a functional Keras model (an ADTRS `network`).

    Returns:
        The number of pairs folded (53 for the `resnet50` backbone). Pairs
        already folded are counted again, not folded twice.
    """
    pairs = conv_batchnorm_pairs(network)
    for conv, batchnorm in pairs:
        if getattr(batchnorm, FOLDED_FLAG, False):
            continue
        set_call(conv, _folded_conv_call(batchnorm))
        set_call(batchnorm, _pass_through_at_inference)
        setattr(batchnorm, FOLDED_FLAG, True)
    return len(pairs)


def unfold_in_graph(conv, batchnorm):
    """Gives `conv` and `batchnorm` back their class calls (before folding a copy for good)."""
    if getattr(batchnorm, FOLDED_FLAG, False):
        set_call(conv, type(conv).call)
        set_call(batchnorm, type(batchnorm).call)
        setattr(batchnorm, FOLDED_FLAG, False)
