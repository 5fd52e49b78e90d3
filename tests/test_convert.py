"""The converted model computes what the authors' PyTorch code computes.

The fixture `adtrs_torch_reference.json` was made by running the authors'
`Net` (github MAS94/ADTRS) on weights drawn by a numpy rule; we redraw the
same weights with numpy alone, convert them and compare intermediates.
"""

import json

import numpy as np
import pytest

from conftest import TESTDATA
from keras_adtrs import convert as convert_command
from keras_adtrs.models import conversion as convert
from keras_adtrs.models.layers import attention_bias_index

REFERENCE = TESTDATA / "adtrs_torch_reference.json"

# Our intermediate name -> the fixture's (authors') name.
COMPARED = {
    "layer4": "layer4",
    "tokens": "layers",
    "block_output": "out_t_c",
    "head_features": "out_t_o",
}
RTOL = 1e-4  # of the tensor's absmax


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


def _draw(rng, shape, kind):
    if kind in ("running_var", "bn_weight"):
        return rng.uniform(0.5, 1.5, shape)
    if kind == "running_mean":
        return rng.normal(0.0, 0.1, shape)
    if kind == "bias":
        return rng.normal(0.0, 0.05, shape)
    if kind == "attention_biases":
        return rng.normal(0.0, 0.5, shape)
    if kind == "conv_linear_weight":
        fan_in = np.prod(np.asarray(shape[1:], dtype=np.float64))
        return rng.normal(0.0, 1.0, shape) * np.sqrt(1.0 / fan_in)
    raise AssertionError(f"unknown kind {kind}")


@pytest.fixture(scope="module")
def state_dict(reference):
    """The fixture's weights, redrawn from its rule with numpy alone."""
    rule = reference["weights_rule"]
    rng = np.random.default_rng(reference["seed"])
    return {
        key: _draw(rng, tuple(shape), kind).astype(np.float32)
        for key, shape, kind in rule["entries"]
    }


@pytest.fixture(scope="module")
def images(reference):
    x = np.random.default_rng(reference["input_seed"]).uniform(-2.0, 2.0, size=(2, 3, 224, 224))
    x = x.astype(np.float32)
    np.testing.assert_allclose(x[0].ravel()[:8], reference["input_check"]["first8_sample0"], rtol=1e-6)
    return x.transpose(0, 2, 3, 1)  # NCHW -> NHWC


@pytest.fixture(scope="module")
def converted(state_dict):
    return convert.from_torch_state_dict(state_dict, input_normalization=None)


@pytest.fixture(scope="module")
def intermediates(converted, images):
    return converted.get_intermediates(images)


def test_weights_rule_reproduced(reference, state_dict):
    checksums = reference["weights_checksums"]["values"]
    assert len(state_dict) == reference["weights_rule"]["num_entries"]
    for key, (total, first) in checksums.items():
        array = state_dict[key]
        assert array.flat[0] == np.float32(first), key
        assert abs(array.sum(dtype=np.float64) - total) <= 1e-6 * max(1.0, abs(total)), key


def test_bias_index_matches_authors(reference):
    theirs = np.asarray(reference["fixed_buffers"]["attention_bias_idxs"])
    ours, num_offsets = attention_bias_index(7)
    np.testing.assert_array_equal(ours, theirs)
    assert num_offsets == len(convert._bias_offsets(7)) == 49


def _nchw(array):
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array


@pytest.mark.parametrize("ours", sorted(COMPARED))
def test_intermediates_match_authors(reference, intermediates, ours):
    ref = reference["intermediates"][COMPARED[ours]]
    ours_nchw = _nchw(intermediates[ours])
    assert list(ours_nchw.shape) == ref["shape"]
    tol = RTOL * ref["absmax"]
    np.testing.assert_allclose(ours_nchw[0].ravel()[:8], ref["first8_sample0"], rtol=0, atol=tol)
    sample1 = ours_nchw[1].ravel()
    probe = np.floor(np.linspace(0, sample1.size - 1, 16)).astype(np.int64)
    np.testing.assert_allclose(sample1[probe], ref["probe16_sample1"], rtol=0, atol=tol)
    np.testing.assert_allclose(ours_nchw.mean(dtype=np.float64), ref["mean"], rtol=0, atol=tol)
    np.testing.assert_allclose(ours_nchw.std(dtype=np.float64), ref["std"], rtol=1e-4)


def test_full_head_features_and_score_match_authors(reference, intermediates):
    full = np.asarray(reference["full_tensors"]["out_t_o"], np.float32)
    np.testing.assert_allclose(
        intermediates["head_features"], full, rtol=0, atol=RTOL * np.abs(full).max()
    )
    expected = np.asarray(reference["outputs"]["predictionQA"], np.float32)
    np.testing.assert_allclose(
        intermediates["score"], expected, rtol=0, atol=RTOL * np.abs(expected).max()
    )


def test_converted_model_saves_and_loads(converted, images, intermediates, tmp_path):
    import keras

    path = tmp_path / "adtrs.keras"
    converted.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.architecture == "resnet50_v1_5"
    assert loaded.layer4_pooling == "top_left"
    assert loaded.input_normalization is None
    scores = keras.ops.convert_to_numpy(loaded(images, training=False))
    np.testing.assert_allclose(scores, intermediates["score"], rtol=0, atol=1e-5)


def test_torch_input_normalization_takes_rgb_0_255(state_dict, images, intermediates):
    model = convert.from_torch_state_dict(state_dict)  # input_normalization="torch"
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
    scores = model.predict(images * std + mean, verbose=0)
    expected = intermediates["score"]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=RTOL * np.abs(expected).max())


def test_crop_larger_than_224_is_refused(state_dict):
    with pytest.raises(ValueError, match="larger than the authors' 224"):
        convert.from_torch_state_dict(state_dict, crop_size=256)


def test_unknown_and_missing_keys_are_named(state_dict):
    broken = dict(state_dict)
    del broken["transformer.k.1.running_var"]
    del broken["model.layer3.2.conv2.weight"]
    broken["transformer.talking_head.weight"] = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError) as info:
        convert.from_torch_state_dict(broken)
    message = str(info.value)
    for key in ("transformer.k.1.running_var", "model.layer3.2.conv2.weight", "transformer.talking_head.weight"):
        assert key in message
    assert "missing keys (2)" in message and "unknown keys (1)" in message


def test_backbone_v1_5_shapes_at_crop_64():
    from keras_adtrs.models.resnet import resnet50_v1_5_stages

    backbone = resnet50_v1_5_stages(64)
    assert backbone.name == "resnet50_v1_5"
    outputs = backbone(np.zeros((2, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [
        (2, 16, 16, 256),
        (2, 8, 8, 512),
        (2, 4, 4, 1024),
        (2, 2, 2, 2048),
    ]
    # torchvision's ResNet50 without its classifier: 23,508,032 trainable.
    trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    assert trainable == 23_508_032


def test_torchvision_resnet50_seeds_backbone(state_dict):
    import keras_adtrs

    torchvision = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    torchvision["fc.weight"] = np.zeros((1000, 2048), np.float32)
    torchvision["fc.bias"] = np.zeros((1000,), np.float32)
    torchvision["bn1.num_batches_tracked"] = np.zeros((), np.int64)
    model = keras_adtrs.build_adtrs(crop_size=64, backbone="resnet50_v1_5", backbone_weights=None)
    convert.from_torchvision_resnet50(torchvision, model)
    backbone = model.backbone.stages
    np.testing.assert_array_equal(
        backbone.get_layer("layer2_0_conv2").kernel.numpy(),
        torchvision["layer2.0.conv2.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        backbone.get_layer("layer4_2_bn3").moving_variance.numpy(),
        torchvision["layer4.2.bn3.running_var"],
    )
    torchvision["layer1.0.conv1.weight"] = np.zeros((64, 64, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight"):
        convert.from_torchvision_resnet50(torchvision, model)


@pytest.mark.large
def test_cli_converts_npz(state_dict, tmp_path, capsys):
    import keras

    source = tmp_path / "weights.npz"
    # DataParallel's `module.` prefix and ignored buffers are accepted.
    ignored = {
        "model.bn1.num_batches_tracked": np.zeros((), np.int64),
        "L2pooling_l1.filter": np.zeros((256, 1, 3, 3), np.float32),
        "transformer.attention_bias_idxs": np.zeros((16, 49), np.int64),
        "model.fc.weight": np.zeros((1000, 2048), np.float32),
    }
    np.savez(source, **{f"module.{k}": v for k, v in {**state_dict, **ignored}.items()})
    output = tmp_path / "converted.keras"
    status = convert_command.main(
        [str(source), "--output", str(output), "--input-normalization", "none", "--crop-size", "64"]
    )
    assert status == 0, capsys.readouterr().err
    assert "converted" in capsys.readouterr().out
    model = keras.saving.load_model(output)
    assert model.crop_size == 64 and model.input_normalization is None
    head = model.network.get_layer("head_dense")
    np.testing.assert_array_equal(head.kernel.numpy(), state_dict["fc2.weight"].T)
    # On the 2x2 grid the block uses the offsets (0..1, 0..1): torch ids 0, 1, 7, 8.
    block = model.network.get_layer("attention_downsample")
    offsets = convert._bias_offsets(block.grid_size)
    torch_ids = [r * 7 + c for r, c in offsets]
    np.testing.assert_array_equal(
        block.attention_biases.numpy(), state_dict["transformer.attention_biases"][:, torch_ids]
    )
    assert np.all(np.isfinite(model.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0)))


def test_cli_without_torch_explains(tmp_path, capsys):
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed")
    except ImportError:
        pass
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"")
    status = convert_command.main([str(checkpoint), "--output", str(tmp_path / "m.keras")])
    assert status == 1
    assert "pip install keras-adtrs[torch]" in capsys.readouterr().err
