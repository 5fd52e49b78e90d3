"""SavedModel export for TF Serving (issue 5). Checked in-process, not against the TF Serving binary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_adtrs import export as export_command
from keras_adtrs.serving import export as export_lib

try:
    import serving_stand_in as stand_in
except ImportError:  # tests/ is a package
    from tests import serving_stand_in as stand_in



@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return stand_in.small_exported_model(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[2])


@pytest.fixture(scope="module")
def jpegs():
    folder = stand_in.shared_data_dir() / "data/clive_dev/ChallengeDB_release/Images"
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:3]
    if len(paths) < 3:
        pytest.skip(f"need 3 JPEGs in {folder}")
    return [p.read_bytes() for p in paths]


@pytest.mark.large
def test_saved_model_cli_lists_both_signatures(exported):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir", exported[2]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    default = out.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    images = out.split("signature_def['serving_images']")[1].split("signature_def[")[0]
    assert "inputs['image_bytes']" in default and "dtype: DT_STRING" in default and "shape: (-1)" in default
    assert "inputs['images']" in images and "dtype: DT_UINT8" in images and "shape: (-1, -1, -1, 3)" in images
    for block in (default, images):
        assert "outputs['score']" in block and "dtype: DT_FLOAT" in block
        assert "Method name is: tensorflow/serving/predict" in block


def test_reloaded_savedmodel_matches_keras(exported, loaded, jpegs):
    model = exported[0]
    expected = np.array([stand_in.local_score(model, data) for data in jpegs])
    assert np.ptp(expected) > 1e-3  # the images get different scores
    scores = loaded.signatures["serving_default"](image_bytes=tf.constant(jpegs))["score"].numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    # The uint8 signature, one decoded image at a time (sizes may differ).
    for data, want in zip(jpegs, expected):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)[None]
        got = loaded.signatures["serving_images"](images=image)["score"].numpy()
        np.testing.assert_allclose(got, [want], atol=1e-4, rtol=0)


def test_small_and_odd_formats_match_keras(exported, loaded):
    # Upscaled (smaller than the crop), portrait, PNG / BMP / GIF.
    model = exported[0]
    image = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    encoded = [
        tf.io.encode_png(image).numpy(),
        tf.io.encode_jpeg(image).numpy(),
        _pil(image, "BMP"),
        _pil(image, "GIF"),
    ]
    expected = [stand_in.local_score(model, data) for data in encoded]
    scores = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))["score"].numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)


def _pil(image, fmt):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def test_malformed_bytes_and_pixel_limit_fail_in_graph(loaded):
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)unknown image file format"):
        serve(image_bytes=tf.constant([b"this is not an image"]))
    big = stand_in.png_bytes(600, 600)  # 360000 > 300000
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels=300000"):
        serve(image_bytes=tf.constant([big]))
    big_jpeg = tf.io.encode_jpeg(np.zeros((600, 600, 3), np.uint8)).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image \(from its header\).*max_pixels=300000"):
        serve(image_bytes=tf.constant([big_jpeg]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels=300000"):
        loaded.signatures["serving_images"](images=tf.zeros([1, 600, 600, 3], tf.uint8))
    # Still serves afterwards; an empty request gets an empty answer.
    assert serve(image_bytes=tf.constant([stand_in.png_bytes(20, 20)]))["score"].shape == (1,)
    assert serve(image_bytes=tf.constant([], tf.string))["score"].shape == (0,)


def test_export_records_crop_size_and_crops(exported):
    meta = export_lib.read_export_metadata(exported[2])
    assert meta["crop_size"] == stand_in.TEST_CROP
    assert meta["num_crops"] == stand_in.TEST_CROPS
    assert meta["max_pixels"] == stand_in.TEST_MAX_PIXELS
    assert set(meta["signatures"]) == {"serving_default", "serving_images"}
    assert os.path.basename(exported[2]) == "1"


def test_warmup_records_parse_and_run(exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported[2], "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert records
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "adtrs"
        assert request.model_spec.signature_name == "serving_default"
        images = tf.make_ndarray(request.inputs["image_bytes"])
        assert images.shape == (1,)
        assert tf.io.decode_png(images[0]).shape[-1] == 3
        out = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
        assert np.isfinite(out["score"].numpy()).all()


def _fake_save(module, path, signatures=None):
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"fake")


def test_interrupted_export_leaves_no_version(exported, tmp_path, monkeypatch):
    model = exported[0]

    def broken_save(module, path, signatures=None):
        _fake_save(module, path)
        raise KeyboardInterrupt("killed midway")

    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        export_lib.export_model(model, tmp_path)
    assert os.listdir(tmp_path / "adtrs") == []  # no version, no temporary folder

    # Interrupted at the final rename: same.
    monkeypatch.setattr(tf.saved_model, "save", _fake_save)
    real_rename = os.rename

    def broken_rename(src, dst):
        if os.path.basename(dst).isdigit():
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk gone"):
        export_lib.export_model(model, tmp_path)
    assert os.listdir(tmp_path / "adtrs") == []


def test_versioning_and_overwrite(exported, tmp_path, monkeypatch):
    model = exported[0]
    monkeypatch.setattr(tf.saved_model, "save", _fake_save)
    (tmp_path / "adtrs" / "3").mkdir(parents=True)
    (tmp_path / "adtrs" / ".tmp-stale").mkdir()
    path = export_lib.export_model(model, tmp_path)
    assert path == os.path.join(str(tmp_path), "adtrs", "4")
    assert export_lib.read_export_metadata(path)["version"] == 4
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_lib.export_model(model, tmp_path, version=4)
    with pytest.raises(FileExistsError):
        export_lib.export_model(model, tmp_path, version=3)
    (tmp_path / "adtrs" / "4" / "marker").write_text("old")
    path = export_lib.export_model(model, tmp_path, version=4, overwrite=True, num_crops=2)
    assert not (tmp_path / "adtrs" / "4" / "marker").exists()
    assert export_lib.read_export_metadata(path)["num_crops"] == 2
    assert sorted(os.listdir(tmp_path / "adtrs")) == [".tmp-stale", "3", "4"]
    assert export_lib.existing_versions(tmp_path / "adtrs") == [3, 4]
    with pytest.raises(ValueError):
        export_lib.export_model(model, tmp_path, version=0)


def test_cli_errors_cleanly(tmp_path, capsys):
    assert export_command.main(["--model", str(tmp_path / "missing.keras"), "--export-dir", str(tmp_path)]) == 2
    assert "no such model file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_command.main(["--export-dir", str(tmp_path)])


def test_metadata_json_is_valid(exported):
    with open(os.path.join(exported[2], "assets.extra", "adtrs_export.json")) as f:
        assert json.load(f)["model_config"]["backbone"]["config"]["crop_size"] == stand_in.TEST_CROP
