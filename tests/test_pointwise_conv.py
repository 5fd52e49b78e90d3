"""1x1 convolutions whose gradients are matrix products in the TensorFlow training step."""

import keras
import numpy as np
import pytest

from conftest import random_crops

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the training step's TensorFlow engine")


def _conv_stack(dtype):
    inputs = keras.Input((5, 6, 24))
    x = keras.layers.Conv2D(16, 1, dtype=dtype, name="pointwise_bias")(inputs)
    x = keras.layers.Conv2D(8, 1, use_bias=False, activation="relu", dtype=dtype, name="pointwise_relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", dtype=dtype, name="three_by_three")(x)
    x = keras.layers.Conv2D(4, 1, strides=2, dtype=dtype, name="pointwise_strided")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _gradients(model, x, matmuls):
    import tensorflow as tf

    from keras_adtrs.models.pointwise_conv_tensorflow import pointwise_convs_as_matmuls

    x = tf.constant(x)
    weights = tf.constant(np.random.default_rng(1).normal(size=(1, 3, 3, 4)).astype("float32"))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(model(x, training=True), tf.float32) * weights)
        return tape.gradient(loss, [x] + [v.value for v in model.trainable_variables])

    if matmuls:
        with pointwise_convs_as_matmuls(model) as switched:
            concrete = step.get_concrete_function(x)
        assert switched == 2  # the 3x3 and the strided 1x1 keep TensorFlow's gradient
    else:
        concrete = step.get_concrete_function(x)
    filters = [op for op in concrete.graph.get_operations() if op.type == "Conv2DBackpropFilter"]
    return [g.numpy().astype("float32") for g in concrete(x)], len(filters)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_matmul_gradients_equal_tensorflow_own(dtype):
    model = _conv_stack(dtype)
    x = np.random.default_rng(2).normal(size=(3, 5, 6, 24)).astype("float32")
    own, own_filters = _gradients(model, x, matmuls=False)
    products, product_filters = _gradients(model, x, matmuls=True)
    assert (own_filters, product_filters) == (4, 2)
    # float32: rounding alone; bfloat16: both round to 8 bits of mantissa, in different orders.
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    assert len(own) == len(products) == 1 + 7
    for i, (a, b) in enumerate(zip(own, products)):
        assert np.abs(a).max() > 0, i
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max(), err_msg=f"gradient {i}")
    # Outside the context the layers are Keras' own again.
    assert all("call" not in layer.__dict__ or layer.call.__func__ is type(layer).call for layer in model.layers)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(_conv_stack(dtype)(x)), rtol=1e-6
    )


def test_training_step_takes_the_same_step_either_way(tiny_model):
    """One SGD step of the ADTRS objective moves every weight as TensorFlow's own gradient does."""
    import keras_adtrs

    x = random_crops(8, seed=3)
    y = np.linspace(20, 80, 8).astype("float32")
    start = tiny_model.get_weights()
    moved = []
    for matmuls in (True, False):
        keras.utils.set_random_seed(7)  # the same dropout masks in both models
        model = keras_adtrs.ADTRSModel.from_config(tiny_model.get_config())
        model.set_weights(start)
        model.matmul_pointwise_gradients = matmuls
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        model.train_on_batch(x, y)
        moved.append([after - before for after, before in zip(model.get_weights(), start)])
    # A bias before a training-mode BatchNorm (and the keys' shift, which the softmax ignores) has a zero
    # gradient in exact arithmetic: its step is rounding noise either way. Every other weight must agree.
    largest = max(np.abs(b).max() for b in moved[1])
    compared = 0
    for weight, a, b in zip(model.weights, *moved):
        scale = np.abs(b).max()
        if scale < 1e-5 * largest:
            assert weight.path.endswith(("bias", "beta")), (weight.path, scale)
            continue
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale, err_msg=weight.path)
        compared += 1
    assert compared > 100  # the backbone, block and head all moved
