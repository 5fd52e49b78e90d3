"""Custom layers: numerics against numpy, and `run_layer_test` (shapes, config round trip, .keras saving)."""

import keras
import numpy as np
import pytest

from keras_adtrs.models import layers as L
from keras_adtrs.models.layers import attention_bias_index
from layer_test_case import run_layer_test


@pytest.mark.parametrize("mode", ["caffe", "torch", None])
def test_input_normalization(mode):
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    layer = L.InputNormalization(mode)
    out = keras.ops.convert_to_numpy(layer(x))
    if mode is None:
        expected = x
    elif mode == "caffe":
        expected = x[..., ::-1] - np.array([103.939, 116.779, 123.68], "float32")
    else:
        expected = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    run_layer_test(L.InputNormalization, {"mode": mode}, x, (2, 4, 4, 3))
    with pytest.raises(ValueError, match="input normalization"):
        L.InputNormalization("imagenet")


def test_channel_l2_normalize():
    x = np.random.default_rng(1).normal(size=(2, 3, 3, 5)).astype("float32")
    x[0, 0, 0] = 0.0
    out = keras.ops.convert_to_numpy(L.ChannelL2Normalize()(x))
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    np.testing.assert_allclose(out, x / np.maximum(norms, 1e-12), rtol=1e-5, atol=1e-7)
    assert np.all(out[0, 0, 0] == 0)
    run_layer_test(L.ChannelL2Normalize, {"epsilon": 1e-6}, x, (2, 3, 3, 5))


def test_l2_pooling_matches_numpy():
    x = np.random.default_rng(2).normal(size=(2, 6, 5, 3)).astype("float32")
    out = keras.ops.convert_to_numpy(L.L2Pooling()(x))
    kernel = np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]) / 4.0
    padded = np.pad(x**2, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            expected += kernel[i, j] * padded[:, i : i + 6, j : j + 5, :]
    np.testing.assert_allclose(out, np.sqrt(expected + 1e-12), rtol=1e-5, atol=1e-6)
    assert kernel.sum() == pytest.approx(1.0)
    run_layer_test(L.L2Pooling, {}, x, (2, 6, 5, 3))


def test_l2_pooling_of_the_channel_normalised_map():
    """`channel_norm_epsilon` pools as ChannelL2Normalize then L2Pooling, from the squares alone."""
    x = np.random.default_rng(3).normal(size=(2, 6, 5, 4)).astype("float32") * 7.0
    x[0, 2, 3] = 0.0  # a zero vector stays 0 after the normalisation
    out = keras.ops.convert_to_numpy(L.L2Pooling(channel_norm_epsilon=1e-12)(x))
    normalised = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    kernel = np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]) / 4.0
    padded = np.pad(normalised**2, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = sum(kernel[i, j] * padded[:, i : i + 6, j : j + 5, :] for i in range(3) for j in range(3))
    np.testing.assert_allclose(out, np.sqrt(expected + 1e-12), rtol=1e-5, atol=1e-6)
    two_layers = L.L2Pooling()(L.ChannelL2Normalize()(x))
    np.testing.assert_allclose(out, keras.ops.convert_to_numpy(two_layers), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, keras.ops.convert_to_numpy(L.L2Pooling()(x)), rtol=1e-2)
    # the floor is the norm's: a vector shorter than it is divided by the floor, not by its norm
    tiny = np.full((1, 1, 1, 4), 1e-4, "float32")
    floored = keras.ops.convert_to_numpy(L.L2Pooling(channel_norm_epsilon=1.0)(tiny))
    np.testing.assert_allclose(floored, np.sqrt(4 / 16 * 1e-8 + 1e-12), rtol=1e-4)
    run_layer_test(L.L2Pooling, {"channel_norm_epsilon": 1e-6}, x, (2, 6, 5, 4))


def test_top_left_average_pooling():
    x = np.arange(2 * 7 * 7 * 3, dtype="float32").reshape(2, 7, 7, 3)
    out = keras.ops.convert_to_numpy(L.TopLeftAveragePooling(4)(x))
    np.testing.assert_allclose(out, x[:, :4, :4].mean(axis=(1, 2)))
    small = keras.ops.convert_to_numpy(L.TopLeftAveragePooling(4)(x[:, :2, :2]))
    np.testing.assert_allclose(small, x[:, :2, :2].mean(axis=(1, 2)))
    run_layer_test(L.TopLeftAveragePooling, {"window": 3}, x, (2, 3))


def test_score_affine():
    out = keras.ops.convert_to_numpy(L.ScoreAffine(2.0, 5.0)(np.array([[1.0], [-1.0]], "float32")))
    np.testing.assert_allclose(out, [7.0, 3.0])
    run_layer_test(L.ScoreAffine, {"scale": 3.5, "offset": -1.0}, np.array([[1.0], [-2.0], [0.5]], "float32"), (3,))


def test_attention_bias_index_matches_closed_form():
    index, count = attention_bias_index(7)
    assert index.shape == (16, 49) and count == 49
    q, k = np.meshgrid(np.arange(16), np.arange(49), indexing="ij")
    closed = np.abs(2 * (q // 4) - k // 7) * 7 + np.abs(2 * (q % 4) - k % 7)
    np.testing.assert_array_equal(index, closed)
    for g in (2, 3, 4, 16):
        index, count = attention_bias_index(g)
        assert index.shape == (((g + 1) // 2) ** 2, g * g)
        assert index.max() == count - 1


def numpy_attention_downsample(layer, x):
    """Independent numpy forward of the block in inference mode."""
    w = {v.path.split("/", 1)[1]: keras.ops.convert_to_numpy(v) for v in layer.weights}

    def bn(name, t):
        gamma, beta = w[f"{name}/gamma"], w[f"{name}/beta"]
        mean, var = w[f"{name}/moving_mean"], w[f"{name}/moving_variance"]
        return (t - mean) / np.sqrt(var + layer.batchnorm_epsilon) * gamma + beta

    def conv1x1(name, t):
        return t @ w[f"{name}/kernel"][0, 0] + w[f"{name}/bias"]

    def dw_s2(name, t):
        kernel, bias = w[f"{name}/kernel"][:, :, :, 0], w[f"{name}/bias"]
        padded = np.pad(t, ((0, 0), (1, 1), (1, 1), (0, 0)))
        g = t.shape[1]
        q = (g + 1) // 2
        out = np.zeros((t.shape[0], q, q, t.shape[-1]))
        for i in range(q):
            for j in range(q):
                patch = padded[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
                out[:, i, j] = (patch * kernel).sum(axis=(1, 2))
        return out + bias

    b, g, _, c = x.shape
    q = (g + 1) // 2
    h, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    query = bn("query_bn", conv1x1("query_proj", dw_s2("query_local", x) + x[:, ::2, ::2]))
    key = bn("key_bn", conv1x1("key_proj", x))
    value = bn("value_bn", conv1x1("value_proj", x))
    value_local = bn("value_local_bn", dw_s2("value_local", value))
    query = query.reshape(b, q * q, h, kd).transpose(0, 2, 1, 3)
    key = key.reshape(b, g * g, h, kd).transpose(0, 2, 1, 3)
    value = value.reshape(b, g * g, h, vd).transpose(0, 2, 1, 3)
    index, _ = attention_bias_index(g)
    logits = query @ key.transpose(0, 1, 3, 2) * kd**-0.5 + w["attention_biases"][:, index]
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    out = (attn @ value).transpose(0, 2, 1, 3).reshape(b, q, q, h * vd)
    out = np.maximum(out + value_local, 0)
    return bn("output_bn", conv1x1("output_proj", out))


@pytest.mark.parametrize("grid", [2, 7])
def test_attention_downsample_matches_numpy(grid):
    rng = np.random.default_rng(3)
    layer = L.AttentionDownsample(num_heads=4, key_dim=4, attn_ratio=2)
    x = rng.normal(size=(2, grid, grid, 24)).astype("float32")
    layer(x)
    for v in layer.weights:  # non-trivial statistics and biases
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32") if "variance" in v.path else rng.normal(0, 0.3, v.shape).astype("float32"))
    out = keras.ops.convert_to_numpy(layer(x, training=False))
    q = (grid + 1) // 2
    assert out.shape == (2, q, q, 24)
    np.testing.assert_allclose(out, numpy_attention_downsample(layer, x.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_attention_downsample_layer_test_and_full_size_shapes():
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 16)).astype("float32")
    kwargs = {"num_heads": 2, "key_dim": 4, "attn_ratio": 2, "batchnorm_momentum": 0.95, "batchnorm_epsilon": 1e-3}
    run_layer_test(L.AttentionDownsample, kwargs, x, (2, 3, 3, 16), atol=1e-5)
    layer = L.AttentionDownsample(batchnorm_momentum=0.95)
    assert layer.compute_output_shape((None, 7, 7, 3840)) == (None, 4, 4, 3840)
    out = layer(np.zeros((1, 7, 7, 3840), "float32"))
    assert tuple(out.shape) == (1, 4, 4, 3840)
    params = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
    assert 9.5e6 < params < 10.2e6  # "about 9.9M in the block"


def test_layers_save_and_load_together_in_a_keras_file(tmp_path):
    inputs = keras.Input((8, 8, 16))
    x = L.ChannelL2Normalize()(inputs)
    x = L.L2Pooling()(x)
    x = L.L2Pooling(channel_norm_epsilon=1e-12)(x)
    x = L.AttentionDownsample(num_heads=2, key_dim=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1)(x)
    out = L.ScoreAffine(2.0, 1.0)(x)
    model = keras.Model(inputs, out)
    data = np.random.default_rng(4).normal(size=(3, 8, 8, 16)).astype("float32")
    path = tmp_path / "layers.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6, atol=1e-6)


def test_fused_batchnorm_matches_keras_batchnorm():
    """TensorFlow's fused kernel (used after `compile` on TensorFlow) computes Keras' BatchNormalization."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the fused kernel is TensorFlow's")
    import tensorflow as tf

    from keras_adtrs.models.fused_batchnorm_tensorflow import use_fused_batchnorm

    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 6, 7)).astype("float32")
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    fused = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    plain.build(x.shape)
    fused.build(x.shape)
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, 7).astype("float32"), rng.normal(0, 1, 7).astype("float32"),
               rng.normal(0, 1, 7).astype("float32"), rng.uniform(0.5, 2.0, 7).astype("float32")]
    plain.set_weights(weights)
    fused.set_weights(weights)
    assert use_fused_batchnorm(fused) == 1 and use_fused_batchnorm(fused) == 0
    np.testing.assert_allclose(fused(x).numpy(), plain(x).numpy(), atol=1e-5)  # moving statistics
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        out_plain, out_fused = plain(xt, training=True), fused(xt, training=True)
        loss_plain = tf.reduce_sum(out_plain * tf.range(7, dtype=tf.float32))
        loss_fused = tf.reduce_sum(out_fused * tf.range(7, dtype=tf.float32))
    np.testing.assert_allclose(out_fused.numpy(), out_plain.numpy(), atol=1e-5)  # batch statistics
    # Moving statistics move the same way (biased variance, as Keras).
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-5)
    for a, b in zip(tape.gradient(loss_plain, [xt, plain.gamma.value, plain.beta.value]),
                    tape.gradient(loss_fused, [xt, fused.gamma.value, fused.beta.value])):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4)
    # The layer's config (and so a .keras file) is unchanged.
    assert fused.get_config() == plain.get_config() | {"name": fused.name}


def test_fused_batchnorm_takes_bfloat16_maps_as_they_are():
    """Under mixed_bfloat16 the fused kernel reads the 16-bit map (no cast up and back) and gives Keras' results."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the fused kernel is TensorFlow's")
    import tensorflow as tf

    from keras_adtrs.models.fused_batchnorm_tensorflow import use_fused_batchnorm

    x = tf.cast(np.random.default_rng(2).normal(2.0, 3.0, (4, 5, 6, 7)).astype("float32"), tf.bfloat16)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype="mixed_bfloat16")
    fused = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype="mixed_bfloat16")
    for layer in (plain, fused):
        layer.build(x.shape)
        layer.set_weights([np.linspace(0.5, 1.5, 7, dtype="float32"), np.linspace(-1, 1, 7, dtype="float32"),
                           np.linspace(-0.5, 0.5, 7, dtype="float32"), np.linspace(0.5, 2.0, 7, dtype="float32")])
    use_fused_batchnorm(fused)
    for training in (False, True):
        out_plain, out_fused = plain(x, training=training), fused(x, training=training)
        assert out_fused.dtype == tf.bfloat16
        # Both round the float32 result to bfloat16 once (8 bits of mantissa).
        np.testing.assert_allclose(tf.cast(out_fused, tf.float32).numpy(), tf.cast(out_plain, tf.float32).numpy(),
                                   atol=2e-2, rtol=1e-2, err_msg=f"training={training}")
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-5)
    graph = tf.function(lambda t: fused(t, training=True)).get_concrete_function(x).graph
    assert not [op for op in graph.get_operations() if op.type == "Cast" and op.inputs[0].dtype == tf.bfloat16
                and op.outputs[0].dtype == tf.float32 and op.inputs[0].shape.rank == 4]
