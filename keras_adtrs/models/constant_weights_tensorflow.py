"""The forward pass of an inference copy with its weights as constants (TensorFlow-only module).

An inference copy (`keras_adtrs.fold_batchnorm`, what the `predict` and
`evaluate` commands and the Beam job score with) cannot train, so its weights
stay as they are. On TensorFlow, `ADTRSModel.use_constant_weights()` makes it
predict through `constant_weights_forward(copy)`: a concrete function of the
copy's inference call in which every weight is a constant of the graph. Two
things make that faster than the same graph reading variables, most of all in
bfloat16 (the measured gain, machine and command are in docs/benchmarks.md):

- oneDNN reorders a constant filter into its blocked layout once and keeps
  it; a filter read from a variable is reordered at every call;
- each residual `Add` is traced as `AddN`. Grappler's remapper fuses `AddN`
  and the ReLU after it into the convolution before it (oneDNN's "sum"
  post-op); in a graph of constants it leaves `AddV2` unfused. `AddN` of two
  tensors is their sum.

Making the function costs seconds once (tracing, and TensorFlow's first run
of a graph that holds every weight), so `keras_adtrs.models.scoring` uses it
for jobs of at least `keras_adtrs.defaults.CONSTANT_WEIGHTS_MIN_CROPS` crops,
and the Beam job's workers always. The scores equal the copy's own call up to
float rounding (a fused sum rounds once).

The weights are read when the function is made. `set_weights` and
`load_weights` drop it; after assigning an inference copy's variables in any
other way, call `model.reset_constant_weights()`.
"""

import contextlib

import keras
import tensorflow as tf

from keras_adtrs.models.graph_folding import set_call


def _add_n_call(self, inputs):
    return tf.math.add_n(list(inputs))


@contextlib.contextmanager
def _residual_adds_as_add_n(network):
    """Traces the network's `Add` layers as `tf.math.add_n` inside the block."""
    adds = [layer for layer in network._flatten_layers() if type(layer) is keras.layers.Add]
    for layer in adds:
        set_call(layer, _add_n_call)
    try:
        yield
    finally:
        for layer in adds:
            set_call(layer, type(layer).call)


def can_use_constant_weights(model):
    """Whether `constant_weights_forward(model)` applies: an inference copy, outside any distribution strategy."""
    return bool(getattr(model, "batchnorm_folded", 0)) and not tf.distribute.has_strategy()


def constant_weights_forward(model):
    """`images -> scores` of `model` in inference mode, with its current weights as graph constants.

    Args:
        model: an `ADTRSModel` (an inference copy).

    Returns:
        A callable taking a float32 tensor `(B, crop, crop, 3)` (pixels in
        [0, 255], any B), inside or outside a `tf.function`, and returning
        the scores `(B,)` as a float32 tensor.
    """
    crop = model.crop_size
    trainable = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    non_trainable = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]

    def forward(images):
        # tf.constant of a numpy array inside the trace: a Const node of the graph.
        scores, _ = model.stateless_call(
            [tf.constant(value) for value in trainable],
            [tf.constant(value) for value in non_trainable],
            images,
            training=False,
        )
        return tf.cast(tf.reshape(scores, (-1,)), tf.float32)

    with _residual_adds_as_add_n(model.network):
        concrete = tf.function(forward).get_concrete_function(tf.TensorSpec((None, crop, crop, 3), tf.float32))
    trainable.clear()  # the graph holds the values now
    non_trainable.clear()
    return concrete
