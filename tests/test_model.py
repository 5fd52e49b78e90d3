"""The ADTRS model: shapes, serialisation, training, seeding, backbone weights."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_adtrs
from conftest import random_crops
from keras_adtrs.errors import SettingError
from keras_adtrs.models.adtrs import ADTRSModel
from keras_adtrs.models.backbone import ADTRSBackbone
from keras_adtrs.models.weights import BackboneWeightsWarning
from keras_file_fixture import fixture_crops, load_fixture, write_keras_file


def test_scores_and_intermediates_at_crop_64(tiny_model):
    x = random_crops(3)
    assert tuple(tiny_model(x).shape) == (3,)
    inter = tiny_model.get_intermediates(x, batch_size=2)
    assert {k: v.shape for k, v in inter.items()} == {
        "layer4": (3, 2, 2, 2048),
        "tokens": (3, 2, 2, 3840),
        "block_output": (3, 1, 1, 3840),
        "head_features": (3, 2048),
        "score": (3,),
    }
    np.testing.assert_allclose(inter["score"], keras.ops.convert_to_numpy(tiny_model(x)), rtol=1e-5, atol=1e-4)


def test_intermediates_at_crop_224_and_parameter_count():
    model = keras_adtrs.build_adtrs(crop_size=224, backbone_weights=None, layer4_pooling="top_left")
    inter = model.get_intermediates(random_crops(1, 224))
    assert inter["layer4"].shape == (1, 7, 7, 2048)
    assert inter["tokens"].shape == (1, 7, 7, 3840)
    assert inter["block_output"].shape == (1, 4, 4, 3840)
    assert 40e6 < model.count_params() < 42e6  # "about 41M in all"


@pytest.mark.parametrize("bad", [32, 100, 544, 64.0, "224", True])
def test_crop_size_is_validated(bad):
    with pytest.raises(SettingError, match="crop_size must be a multiple of 32"):
        ADTRSBackbone(crop_size=bad)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="layer4_pooling"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, layer4_pooling="max")
    with pytest.raises(ValueError, match="backbone"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, backbone="vgg16")
    with pytest.raises(ValueError, match="loss weight"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, loss_weights={"qualty": 1.0})
    with pytest.raises(SettingError, match="backbone must be an ADTRSBackbone"):
        ADTRSModel(backbone="resnet50")


def test_config_round_trip_and_keras_file(tiny_model, tmp_path):
    config = tiny_model.get_config()
    assert ADTRSModel.from_config(json.loads(json.dumps(config))).get_config() == config
    for key in config:
        if key not in ("name", "trainable", "backbone"):
            assert getattr(tiny_model, key) == config[key]
    assert keras.saving.serialize_keras_object(tiny_model.backbone) == config["backbone"]
    # The backbone's own settings read through the task.
    assert (tiny_model.crop_size, tiny_model.precision, tiny_model.architecture) == (64, "float32", "resnet50")
    path = tmp_path / "m.keras"
    tiny_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ADTRSModel) and loaded.get_config() == config
    x = random_crops(4, seed=1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), tiny_model.predict(x, verbose=0), rtol=1e-6, atol=1e-5)


def test_predict_on_arrays_skips_tf_data_autotuning(tiny_model, monkeypatch):
    """`predict` on arrays: the same scores as Keras' own path, through a pipeline without
    tf.data autotuning (whose thread can stall the end of a call; docs/benchmarks.md)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the workaround is for the TensorFlow backend")
    from keras_adtrs.models import predict_tensorflow

    seen = []
    original = predict_tensorflow.array_dataset

    def spy(x, batch_size=None):
        dataset = original(x, batch_size)
        seen.append(dataset if dataset is None else dataset.options().autotune.enabled)
        return dataset

    monkeypatch.setattr(predict_tensorflow, "array_dataset", spy)
    x = random_crops(5, seed=3)
    expected = keras.Model.predict(tiny_model, x, batch_size=2, verbose=0)
    np.testing.assert_allclose(tiny_model.predict(x, batch_size=2, verbose=0), expected, rtol=1e-6, atol=1e-5)
    # Another batch size (the default): the convolutions' float32 rounding may differ in the last digits.
    np.testing.assert_allclose(tiny_model.predict(x.astype("float64"), verbose=0), expected, rtol=1e-5, atol=1e-4)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(x).batch(2)
    np.testing.assert_allclose(tiny_model.predict(dataset, verbose=0), expected, rtol=1e-6, atol=1e-5)
    assert seen == [False, False, None]
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        tiny_model.predict(x, batch_size=0)


def tiny_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = random_crops(n, seed=seed)
    dark = np.arange(n) % 2 == 0  # every batch holds both kinds
    x[dark] *= 0.3  # a learnable signal: darker crops score lower
    y = np.where(dark, 20.0, 80.0).astype("float32") + rng.normal(0, 2, n).astype("float32")
    return x, y


@pytest.mark.large
def test_fit_lowers_the_loss_and_reports_every_term():
    keras.utils.set_random_seed(0)
    model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_scale=30.0, score_offset=50.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    x, y = tiny_data()
    history = model.fit(x, y, batch_size=8, epochs=8, verbose=0, shuffle=False)
    logs = history.history
    for name in ("loss", "quality", "quality_flipped", "consistency", "consistency_flipped", "ranking", "ranking_flipped", "ranking_consistency"):
        assert name in logs and len(logs[name]) == 8
    # The ranking terms make single epochs noisy: compare the last epochs with the first.
    assert min(logs["loss"][-3:]) < 0.7 * logs["loss"][0], logs["loss"]
    assert min(logs["quality"][-3:]) < 0.7 * logs["quality"][0], logs["quality"]
    evaluated = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert set(evaluated) >= {"loss", "quality", "ranking"}
    model.train_on_batch(x[:8], y[:8])


@pytest.mark.large
def test_same_seed_same_scores():
    def run():
        keras.utils.set_random_seed(7)
        model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_scale=30.0, score_offset=50.0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        x, y = tiny_data(seed=3)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        return model.predict(x, verbose=0)

    np.testing.assert_allclose(run(), run(), rtol=1e-5, atol=1e-5)


def test_imagenet_download_failure_is_loud_and_recorded(monkeypatch):
    from keras_adtrs.models import weights

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(weights, "_download", refuse)
    with pytest.warns(BackboneWeightsWarning, match="RANDOM WEIGHTS"):
        model = keras_adtrs.build_adtrs(crop_size=64)
    info = model.backbone_weights_info
    assert info["requested"] == "imagenet" and "random" in info["source"] and "unreachable" in info["error"]


def test_download_attempt_is_bounded(monkeypatch):
    import time

    import keras as keras_module

    from keras_adtrs.models import weights

    monkeypatch.setattr(keras_module.utils, "get_file", lambda *a, **k: time.sleep(30))
    started = time.time()
    with pytest.raises(TimeoutError):
        weights._download("f.h5", "https://example.invalid/f.h5", None, timeout=0.5)
    assert time.time() - started < 5


def test_local_backbone_weights_file(tiny_model, tmp_path):
    path = tmp_path / "backbone.weights.h5"
    tiny_model.backbone.stages.save_weights(path)
    model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=str(path))
    assert model.backbone_weights_info["source"].startswith("file ")
    a, b = model.backbone.stages.weights[0], tiny_model.backbone.stages.weights[0]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(SettingError, match="backbone_weights .*missing.h5: no such file"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=str(tmp_path / "missing.h5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keras_adtrs.build_adtrs(crop_size=64, backbone_weights="none").backbone_weights_info["requested"] is None


def test_backbone_alone_round_trips_and_its_layers_are_the_network_s(tiny_model, tmp_path):
    """The task is built on the backbone: the backbone's layers are the network's, and a backbone saves alone."""
    backbone = tiny_model.backbone
    assert {l.name for l in backbone.layers} <= {l.name for l in tiny_model.network.layers}
    assert backbone.get_layer("attention_downsample") is tiny_model.network.get_layer("attention_downsample")
    crops = random_crops(2, seed=9)
    features = backbone(crops, training=False)
    network = tiny_model.network(crops, training=False)
    for name in ("block_output", "layer4", "tokens"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(features[name]),
                                   keras.ops.convert_to_numpy(network[name]), rtol=1e-6, atol=1e-6)
    config = backbone.get_config()
    assert ADTRSBackbone.from_config(json.loads(json.dumps(config))).get_config() == config
    for key in config:
        if key not in ("name", "trainable"):
            assert getattr(backbone, key) == config[key]
    backbone.save(tmp_path / "backbone.keras")
    loaded = keras.saving.load_model(tmp_path / "backbone.keras")
    assert isinstance(loaded, ADTRSBackbone)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(crops)["block_output"]),
                               keras.ops.convert_to_numpy(features["block_output"]), rtol=1e-5, atol=1e-6)


def _rename_modules(config, renames, counts):
    """Rewrites every `"module"` entry of a saved config (recursively) by `renames`."""
    if isinstance(config, dict):
        if config.get("module") in renames:
            counts[config["module"]] = counts.get(config["module"], 0) + 1
            config["module"] = renames[config["module"]]
        for value in config.values():
            _rename_modules(value, renames, counts)
    elif isinstance(config, list):
        for value in config:
            _rename_modules(value, renames, counts)


@pytest.mark.parametrize("module_paths", ["as saved", "before the layout move"])
def test_keras_file_saved_by_an_earlier_version_loads_and_scores_the_same(tmp_path, module_paths):
    """A `.keras` file as keras_adtrs 0.1.0 (before the backbone/task split) wrote it loads with both
    loaders and gives the scores that version computed (tests/testdata/keras_file_v0_1_0.json). With its
    config's module paths rewritten to those before the layout move (keras_adtrs.model, keras_adtrs.layers),
    it loads too: classes are found by their registered names, which never changed."""
    fixture = load_fixture()
    if module_paths != "as saved":
        counts = {}
        renames = {"keras_adtrs.models.adtrs": "keras_adtrs.model"}
        _rename_modules(fixture["config.json"], renames, counts)
        assert counts == {"keras_adtrs.models.adtrs": 1}
    path = write_keras_file(fixture, tmp_path / "old.keras")
    expected = np.asarray(fixture["scores"])
    assert np.std(expected) > 1e-3 * np.abs(expected).mean()  # scores differ across inputs
    for load in (keras_adtrs.load_model, keras.saving.load_model):
        loaded = load(path)
        assert isinstance(loaded, ADTRSModel) and loaded.crop_size == 64
        np.testing.assert_allclose(loaded.predict(fixture_crops(fixture), verbose=0), expected, rtol=1e-5)
