"""TensorFlow's fused BatchNorm kernel for Keras' BatchNormalization (TensorFlow-only module).

Keras 3's `BatchNormalization` computes, on every backend, the batch moments
and the normalisation as separate ops (`ops.moments`, `ops.batch_normalization`).
On TensorFlow that is several memory-bound passes per layer and as many in the
gradient; `tf.compat.v1.nn.fused_batch_norm` (FusedBatchNormV3) does each
direction in one kernel, which makes the training step faster (the measured
gain, machine and command are in docs/benchmarks.md).

`use_fused_batchnorm(layer_or_model)` gives every plain `BatchNormalization`
inside an instance-level `call` that computes the same thing with the fused
kernel: the layers, their variables, their config and the `.keras` format are
unchanged (a saved model loads on any backend; on TensorFlow the training step,
`keras_adtrs.models.step_tensorflow.compute_gradients`, switches the layers again). Same
conventions as Keras' own call:

- training (`training=True` and a trainable layer): normalise with the batch's
  mean and *biased* variance; the moving statistics move by
  `momentum * moving + (1 - momentum) * batch` with the biased variance (the
  fused kernel returns the Bessel-corrected one; it is scaled back);
- otherwise: normalise with the moving statistics, or pass the input through
  where the layer is folded into its convolution at inference
  (`keras_adtrs.models.graph_folding`);
- computed in float32: under mixed precision the kernel takes the 16-bit
  feature map as it is and computes in float32 inside, so the map is not
  cast up and back;
- layers with `renorm`, `synchronized=True`, a mask, an axis other than the
  last or inputs that are not 4-D keep Keras' own call.
"""

import types

import keras
import tensorflow as tf

from keras_adtrs.models.graph_folding import FOLDED_FLAG


def _fused_call(self, inputs, training=None, mask=None):
    if not training and getattr(self, FOLDED_FLAG, False):
        return inputs  # folded into the convolution before it (keras_adtrs.models.graph_folding)
    if (
        mask is not None
        or len(inputs.shape) != 4
        or self.axis not in (-1, 3)
        or getattr(self, "renorm", False)
        or getattr(self, "synchronized", False)
    ):
        return type(self).call(self, inputs, training=training, mask=mask)
    # The kernel takes 16-bit inputs with float32 statistics and computes in float32 inside:
    # no cast of the feature map up and back (mixed precision).
    x = inputs if inputs.dtype in (tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones((channels,), tf.float32)
    beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros((channels,), tf.float32)
    if training and self.trainable:
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True
        )
        shape = tf.shape(x)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        # The kernel's batch variance is Bessel-corrected; Keras' moving variance is not.
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        self.moving_mean.assign(tf.cast(moving_mean * momentum + mean * (1.0 - momentum), self.moving_mean.dtype))
        self.moving_variance.assign(
            tf.cast(moving_variance * momentum + variance * (1.0 - momentum), self.moving_variance.dtype)
        )
    else:
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x,
            gamma,
            beta,
            mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon,
            is_training=False,
        )
    return tf.cast(outputs, self.compute_dtype)


def use_fused_batchnorm(layer):
    """Switches every plain `BatchNormalization` inside `layer` to the fused kernel.

    Args:
        layer: a Keras layer or model (searched recursively).

    Returns:
        The number of layers switched.

    Raises:
        RuntimeError: Keras does not run on the TensorFlow backend.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"the fused BatchNorm kernel needs the TensorFlow backend, not {keras.backend.backend()!r}")
    switched = 0
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if type(sub) is keras.layers.BatchNormalization and not getattr(sub, "_fused_kernel", False):
            sub.call = types.MethodType(_fused_call, sub)
            sub._fused_kernel = True
            switched += 1
    return switched
