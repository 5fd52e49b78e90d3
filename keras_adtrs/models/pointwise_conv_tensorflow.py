"""1x1 convolutions whose gradients are matrix products (TensorFlow-only module).

A 1x1 convolution at stride 1 is a matrix product: with the map flattened to
`X` of shape `(batch * height * width, in)` and the kernel to `W` of shape
`(in, out)`, `Y = X W + b`. Its gradients are products too:

    dW = X^T dY,    dX = dY W^T,    db = 1^T dY.

TensorFlow's own gradient computes `dW` with `Conv2DBackpropFilter`, which
oneDNN runs several times slower than the forward convolution in bfloat16
(no faster than in float32), while the product `X^T dY` runs near the
matrix-multiply ceiling (the measured gap, machine and command are in
docs/benchmarks.md). Most of ResNet50's convolutions, and the attention
block's projections, are 1x1 at stride 1.

`pointwise_convs_as_matmuls(network)` is a context: the training step
(`keras_adtrs.models.step_tensorflow.compute_gradients`) traces its forward
pass inside it, so those layers compute the same convolution and bias in the
forward pass and these products in the backward pass. Outside the context
the layers are as Keras made them: inference keeps grappler's fusion of the
convolution with the BatchNorm, residual add and ReLU after it
(`keras_adtrs.models.graph_folding`). The layers, variables, config and
`.keras` format do not change. Gradients equal TensorFlow's own up to float
rounding.
"""

import contextlib

import keras
import tensorflow as tf

from keras_adtrs.models.graph_folding import set_call


def is_pointwise(layer):
    """Whether `layer` is a plain `Conv2D` computing a matrix product per pixel (1x1, stride 1, channels last)."""
    return (
        type(layer) is keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and not getattr(layer, "lora_enabled", False)
    )


@tf.custom_gradient
def _pointwise_conv(x, kernel, bias):
    """`conv1x1(x, kernel) + bias`; the backward pass computes matrix products."""
    channels_in, channels_out = kernel.shape[2], kernel.shape[3]
    y = tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides=1, padding="VALID"), bias)

    def grad(dy):
        flat_x = tf.reshape(x, (-1, channels_in))
        flat_dy = tf.reshape(dy, (-1, channels_out))
        d_kernel = tf.reshape(tf.linalg.matmul(flat_x, flat_dy, transpose_a=True), tf.shape(kernel))
        d_x = tf.reshape(
            tf.linalg.matmul(flat_dy, tf.reshape(kernel, (channels_in, channels_out)), transpose_b=True), tf.shape(x)
        )
        # 1^T dY as a product: oneDNN accumulates 16-bit inputs in float32.
        ones = tf.ones((1, tf.shape(flat_dy)[0]), flat_dy.dtype)
        d_bias = tf.reshape(tf.linalg.matmul(ones, flat_dy), (channels_out,))
        return d_x, d_kernel, d_bias

    return y, grad


def _pointwise_call(self, inputs):
    dtype = self.compute_dtype
    kernel = tf.cast(self.kernel, dtype)
    bias = tf.cast(self.bias, dtype) if self.use_bias else tf.zeros((self.filters,), dtype)
    outputs = _pointwise_conv(tf.cast(inputs, dtype), kernel, bias)
    if self.activation is not None:
        return self.activation(outputs)
    return outputs


@contextlib.contextmanager
def pointwise_convs_as_matmuls(network):
    """Inside the block, `network`'s 1x1 stride-1 `Conv2D` layers take their gradients as matrix products.

    Args:
        network: a Keras layer or model (searched recursively).

    Yields:
        The number of layers switched.
    """
    layers = [layer for layer in network._flatten_layers(include_self=True, recursive=True) if is_pointwise(layer)]
    previous = [layer.__dict__.get("call") for layer in layers]
    for layer in layers:
        set_call(layer, _pointwise_call)
    try:
        yield len(layers)
    finally:
        for layer, call in zip(layers, previous):
            set_call(layer, call.__func__ if call is not None else type(layer).call)
