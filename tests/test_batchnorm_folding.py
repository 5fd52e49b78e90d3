"""BatchNorm folded into the convolutions for inference (`keras_adtrs.fold_batchnorm`)."""

import json
import os

import keras
import numpy as np
import pytest

import keras_adtrs
from keras_adtrs.models.folding import conv_batchnorm_pairs
from keras_adtrs.models.graph_folding import FOLDED_FLAG, unfold_in_graph

CROP = 64


def _model_with_trained_statistics(backbone, seed=0):
    """A tiny model whose BatchNorm statistics and score head are far from their initial values."""
    keras.utils.set_random_seed(seed)
    model = keras_adtrs.build_adtrs(
        crop_size=CROP, backbone_weights=None, backbone=backbone, score_scale=10.0, score_offset=50.0
    )
    rng = np.random.default_rng(seed)
    for layer in model.network._flatten_layers(recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.2, channels))
    head = model.network.get_layer("score_dense")
    head.kernel.assign(rng.normal(0.0, 0.02, head.kernel.shape))
    images = rng.uniform(0, 255, (4, CROP, CROP, 3)).astype("float32")
    return model, images


def _layer_by_layer(model):
    """A copy of `model` (same weights) whose BatchNorms run as their own layers at inference too."""
    copy = keras_adtrs.ADTRSModel.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    for conv, batchnorm in conv_batchnorm_pairs(copy.network):
        unfold_in_graph(conv, batchnorm)
    return copy


@pytest.mark.parametrize("backbone", ["resnet50", "resnet50_v1_5"])
def test_folded_copy_scores_like_the_model_which_is_left_untouched(backbone):
    model, images = _model_with_trained_statistics(backbone)
    before = [np.array(w) for w in model.get_weights()]
    reference = _layer_by_layer(model).get_intermediates(images)
    folded = keras_adtrs.fold_batchnorm(model)
    # Every conv -> BatchNorm pair of the backbone (the attention block's are inside a custom layer).
    assert folded.batchnorm_folded == 53 == len(conv_batchnorm_pairs(model.network))
    out = folded.get_intermediates(images)
    for name, value in reference.items():
        scale = float(np.max(np.abs(value)))
        assert scale > 0, name
        np.testing.assert_allclose(out[name], value, atol=1e-5 * scale, rtol=0, err_msg=name)
    # The scores differ from the layer-by-layer ones (the test would notice an unfolded copy otherwise).
    assert not np.array_equal(out["score"], reference["score"])
    assert np.std(out["score"]) > 0.01  # far above the tolerance below
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert model.batchnorm_folded == 0 and folded.get_config() == model.get_config()


@pytest.mark.large
def test_folded_copy_saves_loads_and_refuses_to_train(tmp_path):
    model, images = _model_with_trained_statistics("resnet50", seed=1)
    folded = keras_adtrs.fold_batchnorm(model)
    path = os.fspath(tmp_path / "folded.keras")
    folded.save(path)
    # Reloaded, it is an ordinary model whose folded BatchNorms are identities: the same scores.
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-4, rtol=1e-5
    )
    folded.compile(optimizer=keras.optimizers.Adam(1e-4))
    with pytest.raises(RuntimeError, match="fold_batchnorm"):
        folded.fit(images, np.full(len(images), 50.0, "float32"), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="already a folded"):
        keras_adtrs.fold_batchnorm(folded)
    with pytest.raises(TypeError, match="ADTRSModel"):
        keras_adtrs.fold_batchnorm(keras.Sequential([keras.layers.Dense(1)]))


@pytest.mark.large
def test_export_serves_the_folded_copy_with_the_same_scores(tmp_path):
    import tensorflow as tf

    from keras_adtrs.serving.export import export_model

    model, _ = _model_with_trained_statistics("resnet50", seed=2)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 80, 96, 3), dtype=np.uint8)
    expected = keras_adtrs.score(model, list(images), crops=2, batch_size=6)
    for fold, count in ((True, 53), (False, 0)):
        path = export_model(model, tmp_path / str(fold), num_crops=2, fold_batchnorm=fold)
        with open(os.path.join(path, "assets.extra", "adtrs_export.json")) as handle:
            assert json.load(handle)["batchnorm_folded"] == count
        served = tf.saved_model.load(path).signatures["serving_images"](images=tf.constant(images))["score"]
        np.testing.assert_allclose(served.numpy(), expected, atol=1e-4, rtol=0)
    assert model.batchnorm_folded == 0


def test_inference_commands_fold_only_unfolded_adtrs_models():
    from keras_adtrs.models.folding import folded_for_inference

    model, _ = _model_with_trained_statistics("resnet50", seed=4)
    folded = folded_for_inference(model)
    assert folded is not model and folded.batchnorm_folded == 53
    assert folded_for_inference(folded) is folded
    other = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert folded_for_inference(other) is other


@pytest.mark.parametrize("backbone", ["resnet50", "resnet50_v1_5"])
def test_every_inference_call_folds_batchnorm_in_the_graph_from_the_current_weights(backbone):
    model, images = _model_with_trained_statistics(backbone, seed=5)
    assert model.batchnorm_folded_in_graph == 53
    reference = _layer_by_layer(model)
    out, expected = model.get_intermediates(images), reference.get_intermediates(images)
    for name, value in expected.items():
        scale = float(np.max(np.abs(value)))
        np.testing.assert_allclose(out[name], value, atol=1e-5 * scale, rtol=0, err_msg=name)
    assert np.std(out["score"]) > 0.01  # far above the tolerance below
    # Not a copy made once: new statistics take effect at the next call.
    for target in (model, reference):
        _, layer = conv_batchnorm_pairs(target.network)[-1]
        layer.moving_mean.assign(np.asarray(layer.moving_mean) + 0.5)
    moved, moved_expected = model.predict(images, verbose=0), reference.predict(images, verbose=0)
    assert np.max(np.abs(moved - out["score"])) > 0.01
    np.testing.assert_allclose(moved, moved_expected, atol=1e-5 * float(np.max(np.abs(moved_expected))), rtol=0)


def test_training_calls_run_batchnorm_as_its_own_layer():
    model, images = _model_with_trained_statistics("resnet50", seed=6)
    reference = _layer_by_layer(model)
    outputs = []  # layer4 comes before the dropout layers
    for target in (model, reference):
        keras.utils.set_random_seed(7)
        out = target.network(images, training=True)
        stats = [np.asarray(bn.moving_mean) for _, bn in conv_batchnorm_pairs(target.network)]
        outputs.append((np.asarray(out["layer4"]), stats))
    (layer4, stats), (layer4_ref, stats_ref) = outputs
    np.testing.assert_array_equal(layer4, layer4_ref)
    for value, expected in zip(stats, stats_ref):
        np.testing.assert_array_equal(value, expected)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's fused BatchNorm kernel")
def test_the_fused_training_kernel_keeps_the_graph_folding_at_inference():
    from keras_adtrs.models.fused_batchnorm_tensorflow import use_fused_batchnorm

    model, images = _model_with_trained_statistics("resnet50", seed=8)
    expected = model.get_intermediates(images)
    assert use_fused_batchnorm(model.network) == 58
    assert sum(getattr(bn, FOLDED_FLAG) for _, bn in conv_batchnorm_pairs(model.network)) == 53
    out = model.get_intermediates(images)
    np.testing.assert_allclose(out["score"], expected["score"], atol=1e-5 * float(np.max(np.abs(expected["score"]))))


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_an_inference_copy_with_constant_weights_scores_as_with_its_variables(precision):
    """`use_constant_weights`: a graph of constants, residual adds as AddN, the same scores."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("constant weights are a TensorFlow engine")
    model, images = _model_with_trained_statistics("resnet50", seed=7)
    images = np.floor(images)  # whole pixel values: `score` takes them as uint8 below
    model = keras_adtrs.models.with_precision(model, precision)
    folded = keras_adtrs.fold_batchnorm(model)
    expected = folded.predict_on_batch(images)
    assert np.std(expected) > 0.01
    assert folded.use_constant_weights() and folded.use_constant_weights()  # made once
    ops = {op.type for op in folded._constant_weights_forward.graph.get_operations()}
    assert "AddN" in ops and not ops & {"ReadVariableOp", "VarHandleOp", "ResourceGather"}, ops
    scale = float(np.max(np.abs(expected)))
    tolerance = 1e-5 if precision == "float32" else 2e-2
    for out in (folded.predict_on_batch(images), folded.predict(images, batch_size=3, verbose=0),
                keras_adtrs.score(folded, list(images.astype("uint8")), crops=1)):
        np.testing.assert_allclose(np.reshape(out, -1), expected, atol=tolerance * scale, rtol=0)
    # Only inference copies: a model that trains keeps reading its variables.
    assert not model.use_constant_weights() and model._constant_weights_forward is None


def test_constant_weights_follow_set_weights_and_load_weights(tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("constant weights are a TensorFlow engine")
    model, images = _model_with_trained_statistics("resnet50", seed=8)
    other, _ = _model_with_trained_statistics("resnet50", seed=9)
    folded, folded_other = keras_adtrs.fold_batchnorm(model), keras_adtrs.fold_batchnorm(other)
    first, second = folded.predict_on_batch(images), folded_other.predict_on_batch(images)
    assert np.max(np.abs(first - second)) > 0.1
    assert folded.use_constant_weights()
    folded.set_weights(folded_other.get_weights())
    assert folded._constant_weights_forward is None
    folded.use_constant_weights()
    np.testing.assert_allclose(folded.predict_on_batch(images), second, atol=1e-4, rtol=0)
    path = os.fspath(tmp_path / "first.weights.h5")
    keras_adtrs.fold_batchnorm(model).save_weights(path)
    folded.load_weights(path)
    assert folded._constant_weights_forward is None
    folded.use_constant_weights()
    np.testing.assert_allclose(folded.predict_on_batch(images), first, atol=1e-4, rtol=0)


def test_score_uses_constant_weights_for_large_jobs_only(monkeypatch):
    from keras_adtrs.models import scoring

    if keras.backend.backend() != "tensorflow":
        pytest.skip("constant weights are a TensorFlow engine")
    model, images = _model_with_trained_statistics("resnet50", seed=10)
    folded = keras_adtrs.fold_batchnorm(model)
    monkeypatch.setattr(scoring, "CONSTANT_WEIGHTS_MIN_CROPS", 8)
    small = keras_adtrs.score(folded, list(images[:1].astype("uint8")), crops=4)  # 4 crops
    assert folded._constant_weights_forward is None
    large = keras_adtrs.score(folded, list(images.astype("uint8")), crops=4)  # 16 crops
    assert folded._constant_weights_forward is not None
    np.testing.assert_allclose(large[:1], small, atol=1e-4 * float(np.max(np.abs(large))), rtol=0)
