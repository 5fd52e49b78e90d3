"""Custom layers of ADTRS, written with `keras.ops` only (any Keras backend).

Every layer is registered serializable, keeps one attribute per `__init__`
argument and round-trips through `get_config` / `from_config`.
"""

import itertools
import math

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_adtrs"

# Normalisations of RGB input in [0, 255]: name -> (mean, std, swap to BGR);
# mean and std are in the channel order the backbone sees (BGR for caffe).
INPUT_NORMALIZATIONS = {
    # keras.applications ResNet50 ("caffe"): BGR, mean subtracted, no scaling.
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    # torchvision ImageNet: RGB / 255, then (x - mean) / std.
    "torch": (
        (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0),
        (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0),
        False,
    ),
}


@keras.saving.register_keras_serializable(package=PACKAGE)
class InputNormalization(keras.layers.Layer):
    """Maps RGB pixel values in [0, 255] to what a backbone's weights expect.

    Args:
        mode: str or None. `"caffe"` (keras.applications ResNet50: BGR,
            ImageNet mean subtracted), `"torch"` (torchvision: RGB, ImageNet
            mean and std on [0, 1]) or `None` (identity: the input is already
            normalised). Defaults to `"caffe"`.
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode is not None and mode not in INPUT_NORMALIZATIONS:
            raise ValueError(
                f"input normalization must be one of {sorted(INPUT_NORMALIZATIONS)} "
                f"or None, got {mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode is None:
            return x
        mean, std, to_bgr = INPUT_NORMALIZATIONS[self.mode]
        if to_bgr:  # mean and std are given in the channel order after the swap
            x = ops.flip(x, axis=-1)
        mean = ops.convert_to_tensor(np.array(mean, "float32"), dtype=x.dtype)
        std = ops.convert_to_tensor(np.array(std, "float32"), dtype=x.dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def squared_norm_floor(epsilon):
    """`epsilon**2`, raised to the smallest normal float32 number.

    `max(|x|^2, floor)` is `max(|x|, epsilon)^2`. The floor stays a normal
    float32 number, so a zero vector gives 0, never `0 * inf`.
    """
    return max(float(epsilon) ** 2, float(np.finfo(np.float32).tiny))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelL2Normalize(keras.layers.Layer):
    """Divides each pixel's feature vector by its L2 norm over channels.

    `x / max(||x||_2, epsilon)` along the last axis, as `F.normalize(p=2,
    dim=1)` in the authors' code.

    Args:
        epsilon: float. Lower bound of the norm. Defaults to `1e-12`.
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        # float32 inside: under mixed precision the squares overflow float16
        # and epsilon (1e-12) underflows to 0.
        x = ops.cast(inputs, "float32")
        # x * rsqrt(max(|x|^2, epsilon^2)) == x / max(|x|, epsilon): one multiply over the map
        # instead of a division (the square root is taken per position).
        squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
        inverse_norm = ops.rsqrt(ops.maximum(squared_norm, squared_norm_floor(self.epsilon)))
        return ops.cast(x * inverse_norm, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2Pooling(keras.layers.Layer):
    """L2 pooling: `sqrt(hann3x3 * x**2 + epsilon)`, depthwise, stride 1.

    The fixed filter is the normalised outer product of `hanning(5)[1:-1]`,
    i.e. `[[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16`, applied with zero padding 1.
    It has no weights.

    With `channel_norm_epsilon` set, each position's feature vector is first
    divided by `max(||x||_2, channel_norm_epsilon)` over channels, as
    `ChannelL2Normalize` does; the ADTRS backbone pools this way. The layer
    then needs only the squares: `(x / |x|)**2 = x**2 / |x|**2`, which saves
    two passes over the full-size map (the normalised map and its square).

    Args:
        epsilon: float. Added before the square root. Defaults to `1e-12`.
        channel_norm_epsilon: float or None. Lower bound of the channel norm
            when the layer normalises first; None pools the input as it is.
            Defaults to None.
    """

    def __init__(self, epsilon=1e-12, channel_norm_epsilon=None, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.channel_norm_epsilon = channel_norm_epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        taps = np.hanning(5)[1:-1]
        kernel = np.outer(taps, taps)
        kernel = (kernel / kernel.sum()).astype("float32")
        self._kernel = np.tile(kernel[:, :, None, None], (1, 1, channels, 1))

    def call(self, inputs):
        # float32 inside: epsilon (1e-12) underflows in float16 (sqrt(0) -> inf gradient).
        kernel = ops.convert_to_tensor(self._kernel, dtype="float32")
        squares = ops.square(ops.cast(inputs, "float32"))
        if self.channel_norm_epsilon is not None:
            squared_norm = ops.sum(squares, axis=-1, keepdims=True)
            floor = squared_norm_floor(self.channel_norm_epsilon)
            squares = squares * ops.reciprocal(ops.maximum(squared_norm, floor))
        # "same" at stride 1 is zero padding 1 on every side (3x3): the same sums as an explicit
        # pad, without a pass that writes the padded map.
        out = ops.depthwise_conv(squares, kernel, strides=1, padding="same")
        return ops.cast(ops.sqrt(out + self.epsilon), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "channel_norm_epsilon": self.channel_norm_epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TopLeftAveragePooling(keras.layers.Layer):
    """Mean of the top-left `window x window` block of a feature map.

    Reproduces the authors' `AvgPool2d(4)` on the 7x7 layer-4 map, which
    averages rows and columns 0-3 only. On maps smaller than the window the
    whole map is averaged. Output: `(batch, channels)`.

    Args:
        window: int. Side of the averaged block. Defaults to `4`.
    """

    def __init__(self, window=4, **kwargs):
        super().__init__(**kwargs)
        self.window = window

    def call(self, inputs):
        return ops.mean(inputs[:, : self.window, : self.window, :], axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "window": self.window}


def attention_bias_index(grid_size):
    """Offset ids of the relative-position bias, as EfficientFormerV2 numbers them.

    Query point (qr, qc) on the `ceil(g/2)` grid and key point (kr, kc) on the
    `g` grid get the offset `(|s*qr - kr|, |s*qc - kc|)` with
    `s = ceil(g / ceil(g/2))`; offsets are numbered in order of first
    appearance, scanning queries then keys row-major.

    Returns:
        `(index, num_offsets)`: an int32 array `(queries, keys)` and the number
        of distinct offsets (the bias table's width).
    """
    query_size = math.ceil(grid_size / 2)
    stride = math.ceil(grid_size / query_size)
    offsets = {}
    index = []
    keys = list(itertools.product(range(grid_size), range(grid_size)))
    for qr, qc in itertools.product(range(query_size), range(query_size)):
        for kr, kc in keys:
            offset = (abs(qr * stride - kr), abs(qc * stride - kc))
            index.append(offsets.setdefault(offset, len(offsets)))
    index = np.array(index, "int32").reshape(query_size * query_size, len(keys))
    return index, len(offsets)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionDownsample(keras.layers.Layer):
    """The attention down-sampling block of ADTRS (EfficientFormerV2 style).

    Input `(batch, g, g, C)`, output `(batch, ceil(g/2), ceil(g/2), C)`. Queries
    come from a stride-2 local branch (depthwise 3x3 conv + subsampling, then
    1x1 conv and BatchNorm), keys and values from 1x1 convs with BatchNorm over
    all `g*g` positions; a learned relative-position bias is added to the
    logits; a stride-2 depthwise conv of the values is added to the attention
    output, then ReLU, 1x1 conv back to `C` and BatchNorm. No residual.

    Args:
        num_heads: int. Attention heads. Defaults to `16`.
        key_dim: int. Query/key channels per head. Defaults to `16`.
        attn_ratio: int. Value channels per head are `attn_ratio * key_dim`.
            Defaults to `4`.
        batchnorm_momentum: float. Momentum of the moving statistics
            (Keras convention; torch's 0.1 is Keras' 0.9). Defaults to `0.9`.
        batchnorm_epsilon: float. Defaults to `1e-5` (torch's).

    Example:
    >>> block = AttentionDownsample()
    >>> block(np.zeros((2, 7, 7, 3840), "float32")).shape
    (2, 4, 4, 3840)
    """

    def __init__(
        self,
        num_heads=16,
        key_dim=16,
        attn_ratio=4,
        batchnorm_momentum=0.9,
        batchnorm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.attn_ratio = attn_ratio
        self.batchnorm_momentum = batchnorm_momentum
        self.batchnorm_epsilon = batchnorm_epsilon
        self.value_dim = attn_ratio * key_dim
        self.scale = key_dim**-0.5

    def _bn(self, name):
        return keras.layers.BatchNormalization(
            momentum=self.batchnorm_momentum,
            epsilon=self.batchnorm_epsilon,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height is None or width is None or height != width:
            raise ValueError(
                f"AttentionDownsample needs a static square grid, got {input_shape}"
            )
        self.grid_size = int(height)
        self.query_size = math.ceil(self.grid_size / 2)
        qk_dim = self.num_heads * self.key_dim
        v_dim = self.num_heads * self.value_dim
        policy = self.dtype_policy

        def conv1x1(filters, name):
            return keras.layers.Conv2D(filters, 1, dtype=policy, name=name)

        def dwconv_s2(name):
            return keras.layers.DepthwiseConv2D(3, strides=2, dtype=policy, name=name)

        self.query_local = dwconv_s2("query_local")
        self.query_proj = conv1x1(qk_dim, "query_proj")
        self.query_bn = self._bn("query_bn")
        self.key_proj = conv1x1(qk_dim, "key_proj")
        self.key_bn = self._bn("key_bn")
        self.value_proj = conv1x1(v_dim, "value_proj")
        self.value_bn = self._bn("value_bn")
        self.value_local = dwconv_s2("value_local")
        self.value_local_bn = self._bn("value_local_bn")
        self.output_proj = conv1x1(channels, "output_proj")
        self.output_bn = self._bn("output_bn")

        g, q = self.grid_size, self.query_size
        padded = (None, g + 2, g + 2)
        self.query_local.build(padded + (channels,))
        self.query_proj.build((None, q, q, channels))
        self.query_bn.build((None, q, q, qk_dim))
        self.key_proj.build(input_shape)
        self.key_bn.build((None, g, g, qk_dim))
        self.value_proj.build(input_shape)
        self.value_bn.build((None, g, g, v_dim))
        self.value_local.build(padded + (v_dim,))
        self.value_local_bn.build((None, q, q, v_dim))
        self.output_proj.build((None, q, q, v_dim))
        self.output_bn.build((None, q, q, channels))

        index, num_offsets = attention_bias_index(self.grid_size)
        self._bias_index = index
        self.attention_biases = self.add_weight(
            name="attention_biases",
            shape=(self.num_heads, num_offsets),
            initializer="zeros",
        )
        self.built = True

    @staticmethod
    def _pad1(x):
        return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])

    def _heads(self, x, positions, depth):
        # (B, P, heads*depth) head-major channels -> (B, heads, P, depth)
        x = ops.reshape(x, (-1, positions, self.num_heads, depth))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, inputs, training=None, return_attention=False):
        g, q = self.grid_size, self.query_size
        subsampled = ops.average_pool(inputs, pool_size=1, strides=2, padding="valid")
        # query_local's weights, applied as depthwise conv, + subsample, + bias: on
        # TensorFlow, DepthwiseConv2D's own BiasAdd followed by this Add makes
        # grappler's remapper fail on the whole graph ("... /add has an empty op
        # name"), which then fuses no conv + BatchNorm + ReLU anywhere.
        kernel = ops.cast(self.query_local.kernel, inputs.dtype)
        query = ops.depthwise_conv(self._pad1(inputs), kernel, strides=2, padding="valid")
        query = query + subsampled + ops.cast(self.query_local.bias, inputs.dtype)
        query = self.query_bn(self.query_proj(query), training=training)
        key = self.key_bn(self.key_proj(inputs), training=training)
        value = self.value_bn(self.value_proj(inputs), training=training)
        value_local = self.value_local_bn(
            self.value_local(self._pad1(value)), training=training
        )

        query = self._heads(query, q * q, self.key_dim)
        key = self._heads(key, g * g, self.key_dim)
        value = self._heads(value, g * g, self.value_dim)

        bias = ops.take(self.attention_biases, self._bias_index.reshape(-1), axis=1)
        bias = ops.reshape(bias, (self.num_heads, q * q, g * g))
        logits = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2))) * self.scale
        # Softmax in float32 (mixed precision: float16 logits can overflow its exp).
        attention = ops.softmax(
            ops.cast(logits, "float32") + ops.cast(bias, "float32"), axis=-1
        )
        attention = ops.cast(attention, value.dtype)
        out = ops.matmul(attention, value)  # (B, heads, q*q, value_dim)
        out = ops.reshape(
            ops.transpose(out, (0, 2, 1, 3)),
            (-1, q, q, self.num_heads * self.value_dim),
        )
        out = ops.relu(out + value_local)
        out = self.output_bn(self.output_proj(out), training=training)
        if return_attention:
            return out, attention
        return out

    def compute_output_shape(self, input_shape):
        q = None if input_shape[1] is None else math.ceil(input_shape[1] / 2)
        return (input_shape[0], q, q, input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "attn_ratio": self.attn_ratio,
            "batchnorm_momentum": self.batchnorm_momentum,
            "batchnorm_epsilon": self.batchnorm_epsilon,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScoreAffine(keras.layers.Layer):
    """`score = raw * scale + offset`, squeezing the last axis.

    Lets the head learn labels standardised to zero mean and unit spread while
    the model speaks in the data set's own units (the training objective is
    computed on those units, as in the authors' code). Not trainable.

    Args:
        scale: float. Defaults to `1.0`.
        offset: float. Defaults to `0.0`.
    """

    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.offset = float(offset)

    def call(self, inputs):
        x = ops.squeeze(ops.cast(inputs, "float32"), axis=-1)
        return x * self.scale + self.offset

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}
