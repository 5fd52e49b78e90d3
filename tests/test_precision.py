"""The precision option: float32, mixed_bfloat16, mixed_float16; the device check; save and load."""

import csv
import json

import keras
import numpy as np
import pytest

import keras_adtrs
from conftest import random_crops, random_score_head
from keras_adtrs.models import precision
from keras_adtrs.models import ADTRSModel, with_precision
from keras_adtrs.models.backbone import ADTRSBackbone
from keras_file_fixture import load_fixture
from run_helpers import TINY, run_train

CPU_ONLY = ("Test CPU", (), ())  # no AVX512-BF16 / AMX, no GPU or TPU
BF16_CPU = ("Test CPU", ("avx512_bf16",), ())


@pytest.fixture
def device(monkeypatch):
    """Sets what the device check sees: `device(summary)`."""

    def use(summary):
        monkeypatch.setattr(precision, "device_summary", lambda: summary)
        monkeypatch.delenv(precision.FORCE_VARIABLE, raising=False)

    return use


def test_unsupported_precision_names_the_precision_and_the_device(device):
    device(CPU_ONLY)
    assert precision.check_precision("float32") == "float32"
    with pytest.raises(precision.UnsupportedPrecisionError) as error:
        precision.check_precision("mixed_bfloat16")
    message = str(error.value)
    assert "'mixed_bfloat16'" in message and "AVX512-BF16" in message and "CPU 'Test CPU' without" in message
    assert "no GPU or TPU" in message and "Use float32" in message and error.value.setting == "precision"
    with pytest.raises(precision.UnsupportedPrecisionError, match="'mixed_float16' needs a GPU"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, precision="mixed_float16")
    with pytest.raises(ValueError, match="precision must be one of float32, mixed_bfloat16, mixed_float16, got 'fp8'"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, precision="fp8")
    device(BF16_CPU)
    assert precision.check_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(precision.UnsupportedPrecisionError, match="CPU 'Test CPU' with avx512_bf16"):
        precision.check_precision("mixed_float16")
    device(("Test CPU", (), (("gpu", (7, 5)),)))  # an older GPU: float16 yes, bfloat16 no
    assert precision.check_precision("mixed_float16") == "mixed_float16"
    with pytest.raises(precision.UnsupportedPrecisionError, match=r"GPU \(compute capability 7.5\)"):
        precision.check_precision("mixed_bfloat16")


@pytest.mark.large
def test_train_command_refuses_a_precision_the_device_lacks(tmp_path):
    """The command's own check runs in its process: float16 on this CPU-only machine (no GPU here)."""
    if precision.precision_support("mixed_float16")[0]:
        pytest.skip("this machine has a GPU")
    result = run_train([*TINY, "--precision", "mixed_float16", "--output-dir", str(tmp_path / "run")])
    assert result.returncode != 0
    assert "error: --precision 'mixed_float16' needs a GPU; this machine has: CPU" in result.stderr
    assert "Traceback" not in result.stderr


def test_cpu_flags_and_the_alias_option(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert precision.cpu_flags(str(info)) == ("Some CPU", {"fpu", "avx512f", "avx512_bf16", "amx_tile"})
    assert precision.cpu_flags(str(tmp_path / "missing")) == ("unknown CPU", set())
    from keras_adtrs.train import build_parser
    from keras_adtrs.defaults import PRECISION_CHOICES, PRECISIONS

    assert PRECISIONS == precision.PRECISIONS and "auto" in PRECISION_CHOICES
    parser = build_parser()
    assert parser.parse_args([]).precision == "float32"
    assert parser.parse_args(["--mixed-precision"]).precision == "mixed_float16"  # older command lines
    assert parser.parse_args(["--precision", "mixed_bfloat16"]).precision == "mixed_bfloat16"
    assert parser.parse_args(["--precision", "auto"]).precision == "auto"


@pytest.mark.large
def test_mixed_model_keeps_the_head_and_the_loss_in_float32(device, tmp_path):
    device(BF16_CPU)
    model = random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, precision="mixed_bfloat16"))
    assert model.precision == "mixed_bfloat16" and keras.config.dtype_policy().name == "float32"
    network = model.network
    assert network.get_layer("resnet50").layers[2].compute_dtype == "bfloat16"
    for name in ("head_dense", "score_dense", "score", "block_pooling", "layer4_pooling", "head_concat"):
        assert network.get_layer(name).compute_dtype == "float32", name
    assert all(v.dtype == "float32" for v in model.weights)
    x = random_crops(4)
    out = network(x, training=False)
    assert str(out["score"].dtype) in ("float32", "<dtype: 'float32'>")
    assert "bfloat16" in str(out["block_output"].dtype)
    terms = model.compute_objective(x, np.linspace(20, 80, 4).astype("float32"), training=False)
    assert all("float32" in str(v.dtype) for v in terms.values())
    # The same weights in float32: close, not equal.
    as_float32 = with_precision(model, "float32")
    assert as_float32.precision == "float32" and with_precision(model, "mixed_bfloat16") is model
    a, b = np.asarray(model.predict(x, verbose=0)), np.asarray(as_float32.predict(x, verbose=0))
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.5 * (np.abs(b).max() + 1)
    # Saved and loaded in a process whose global policy is float32: computes as saved.
    path = tmp_path / "bf16.keras"
    model.save(path)
    loaded = keras_adtrs.load_model(path)
    assert isinstance(loaded, ADTRSModel) and loaded.precision == "mixed_bfloat16"
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), a)
    # Files saved before the option existed (a flat config without "precision") load in the global policy.
    config = load_fixture()["config.json"]["config"]
    config.pop("precision")
    assert ADTRSModel.from_config(config).precision == "float32"


@pytest.mark.slow  # bash .ci/run-slow; the default suite keeps the bfloat16 model's build, save and load
def test_bfloat16_training_run_saves_and_loads_with_the_same_scores(default_data_dir, tmp_path):
    """`train --precision mixed_bfloat16` at crop 64: the run's test scores are those of its model.keras, reloaded."""
    out = tmp_path / "run"
    # Forced, so that the test also runs on CPUs without AVX512-BF16 (emulated there).
    result = run_train([*TINY, "--precision", "mixed_bfloat16", "--data-dir", default_data_dir, "--output-dir", str(out)],
                       KERAS_ADTRS_FORCE_PRECISION="1")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["precision"] == "mixed_bfloat16" and config["model"]["backbone"]["config"]["precision"] == "mixed_bfloat16"
    assert (out / "export" / "adtrs" / "1" / "saved_model.pb").is_file()
    model = keras_adtrs.load_model(out / "model.keras")
    assert model.precision == "mixed_bfloat16"
    with open(out / "test_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    from keras_adtrs.data.registry import load_source

    source = load_source("default", data_dir=default_data_dir)
    position = {name: i for i, name in enumerate(source.names)}
    images = source.subset([position[row["file_name"]] for row in rows]).images
    scores = keras_adtrs.score(model, images, crops=1, batch_size=config["settings"]["score_batch_size"])
    recorded = np.array([float(row["prediction"]) for row in rows])
    np.testing.assert_allclose(scores, recorded, rtol=2e-5, atol=1e-4)


# ----------------------------------------------------------------- pre-training
@pytest.mark.large
def test_mixed_pretraining_model_keeps_the_head_and_the_loss_in_float32(tmp_path):
    """`PretrainingModel` in bfloat16: the score, the classifier and every loss term in float32; saved and loaded."""
    from keras_adtrs.data.distortions import KINDS
    from keras_adtrs.data.pretraining import DistortionBatches, num_classes, procedural_references
    from keras_adtrs.models.pretraining import PretrainingModel

    keras.utils.set_random_seed(0)
    kinds = KINDS[:3]
    x, y = DistortionBatches(procedural_references(4, seed=5, size=96), 64, kinds, groups=2, levels=3, steps=1,
                             seed=0)[0]
    model = PretrainingModel(ADTRSBackbone(crop_size=64, precision="mixed_bfloat16"), num_classes(kinds),
                             group_size=3, objective="ranking+classification+fr")
    random_score_head(model.adtrs)
    assert model.adtrs.precision == "mixed_bfloat16" and model.classifier.compute_dtype == "float32"
    assert model.adtrs.network.get_layer("resnet50").layers[2].compute_dtype == "bfloat16"
    out = model(x)
    assert all("float32" in str(v.dtype) for v in out.values())
    loss = model.compute_loss(x, y, out)
    assert "float32" in str(loss.dtype)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(2)]
    assert all(np.isfinite(float(log["loss"])) for log in logs)
    assert all(v.dtype == "float32" for v in model.weights)
    # What `pretrain` saves (the ADTRS model) loads in bfloat16 with the same scores as the trained
    # weights in a fresh model. (The trained model itself now runs TensorFlow's fused BatchNorm kernel,
    # whose float32 rounding differs in the last bits; bfloat16 casts after it make that visible.)
    path = tmp_path / "pretrained.keras"
    model.adtrs.save(path)
    loaded = keras_adtrs.load_model(path)
    assert loaded.precision == "mixed_bfloat16"
    fresh = ADTRSModel.from_config(model.adtrs.get_config())
    fresh.set_weights(model.adtrs.get_weights())
    crops = random_crops(6)
    expected = np.asarray(fresh.predict(crops, verbose=0))
    assert np.ptp(expected) > 1e-3  # the crops get different scores
    np.testing.assert_array_equal(np.asarray(loaded.predict(crops, verbose=0)), expected)
    trained = np.asarray(model.adtrs.predict(crops, verbose=0))
    np.testing.assert_allclose(trained, expected, rtol=2e-2)  # bfloat16 has 8 significant bits


PRETRAIN_TINY = ["--crop-size", "64", "--groups", "2", "--levels", "3", "--procedural-references", "6",
                 "--steps", "2", "--steps-per-epoch", "2", "--kinds", "blur,noise"]


def _run_module(module, args, **env):
    import os
    import subprocess
    import sys

    from conftest import REPO

    environment = {**os.environ, "KERAS_ADTRS_OFFLINE": "1", **env}
    environment.pop("KERAS_ADTRS_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=environment, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow  # bash .ci/run-slow; the default suite keeps the bfloat16 pre-training model
def test_bfloat16_pretrain_command_saves_a_model_that_loads_in_bfloat16(tmp_path):
    out = tmp_path / "pretrain"
    # Forced, so that the test also runs on CPUs without AVX512-BF16 (emulated there).
    result = _run_module("keras_adtrs.pretrain", [*PRETRAIN_TINY, "--precision", "mixed_bfloat16",
                                                  "--output-dir", str(out)], KERAS_ADTRS_FORCE_PRECISION="1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "mixed_bfloat16" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["precision"] == "mixed_bfloat16"
    assert config["model"]["backbone"]["config"]["precision"] == "mixed_bfloat16"
    model = keras_adtrs.load_model(out / "model.keras")
    assert isinstance(model, ADTRSModel) and model.precision == "mixed_bfloat16"
    crops = random_crops(6)
    scores = np.asarray(model.predict(crops, verbose=0))
    assert np.all(np.isfinite(scores)) and np.ptp(scores) > 0  # the ranking term trained the score layer
    # The file's weights in a freshly built bfloat16 model give the same scores; in float32, close ones.
    as_float32 = with_precision(model, "float32")
    np.testing.assert_array_equal(np.asarray(with_precision(as_float32, "mixed_bfloat16").predict(crops, verbose=0)),
                                  scores)
    assert not np.array_equal(np.asarray(as_float32.predict(crops, verbose=0)), scores)


@pytest.mark.large
def test_pretrain_command_refuses_a_precision_the_device_lacks(tmp_path):
    if precision.precision_support("mixed_float16")[0]:
        pytest.skip("this machine has a GPU")
    result = _run_module("keras_adtrs.pretrain", [*PRETRAIN_TINY, "--precision", "mixed_float16",
                                                  "--output-dir", str(tmp_path / "run")])
    assert result.returncode != 0
    assert "error: --precision 'mixed_float16' needs a GPU; this machine has: CPU" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------- export
@pytest.mark.large
def test_export_precision_option(tmp_path, capsys):
    """`export --precision`: a float32 model served in bfloat16; LiteRT and ONNX take float32 only."""
    import tensorflow as tf

    from keras_adtrs import export as export_command
    from keras_adtrs.serving.export import read_export_metadata

    keras.utils.set_random_seed(0)
    model = random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_offset=50.0,
                                                      score_scale=10.0))
    path = tmp_path / "float32.keras"
    model.save(path)
    base = ["--model", str(path), "--export-dir", str(tmp_path / "exports"), "--crops", "1"]
    assert export_command.main([*base, "--precision", "mixed_bfloat16"]) == 0
    assert "mixed_bfloat16" in capsys.readouterr().out
    version = tmp_path / "exports" / "adtrs" / "1"
    metadata = read_export_metadata(str(version))
    assert metadata["model_config"]["backbone"]["config"]["precision"] == "mixed_bfloat16"
    assert metadata["batchnorm_folded"] == 53
    assert metadata["deployment"]["precision"] == "mixed_bfloat16"
    served = tf.saved_model.load(str(version)).signatures["serving_images"]
    assert "DT_BFLOAT16" in str(served.graph.as_graph_def())
    crops = random_crops(6)
    got = np.concatenate([served(images=tf.constant(c[None].astype(np.uint8)))["score"].numpy() for c in crops])
    want = np.asarray(model.predict(crops.astype(np.uint8).astype("float32"), verbose=0))
    assert np.ptp(want) > 1e-3
    # Same weights, bfloat16 rounding: close to the float32 scores, in the same order.
    assert np.abs(got - want).max() < 0.1 * np.ptp(want)
    assert np.array_equal(np.argsort(got), np.argsort(want))
    assert not np.array_equal(got, want)

    # LiteRT and ONNX: float32 only, named before any work.
    for fmt in ("litert", "onnx"):
        with pytest.raises(SystemExit) as exit_:
            export_command.main([*base, "--format", fmt, "--precision", "mixed_bfloat16"])
        assert exit_.value.code == 2
        assert f"--format {fmt} --precision mixed_bfloat16 is not supported: {fmt} exports float32 models" in (
            capsys.readouterr().err)


@pytest.mark.slow  # an ONNX conversion, about a minute: bash .ci/run-slow
def test_a_bfloat16_model_exports_to_onnx_as_a_float32_copy(tmp_path, capsys):
    """A bfloat16 model: refused by the ONNX export as it is, exported with --precision float32."""
    from keras_adtrs import export as export_command

    model = random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_offset=50.0,
                                                      score_scale=10.0))
    mixed = tmp_path / "bfloat16.keras"
    with_precision(model, "mixed_bfloat16").save(mixed)
    bf16_base = ["--model", str(mixed), "--export-dir", str(tmp_path / "artifacts"), "--format", "onnx"]
    assert export_command.main(bf16_base) == 2
    error = capsys.readouterr().err
    assert "error: --precision mixed_bfloat16: format onnx exports float32 models" in error
    assert "precision float32" in error
    assert not (tmp_path / "artifacts" / "adtrs.onnx").exists()
    assert export_command.main([*bf16_base, "--precision", "float32"]) == 0
    assert (tmp_path / "artifacts" / "adtrs.onnx").is_file()
    artifact = json.loads((tmp_path / "artifacts" / "adtrs.onnx.json").read_text())
    assert artifact["precision"] == "float32"


def test_auto_picks_bfloat16_only_where_the_device_runs_it_fast(device):
    cases = (
        (("Xeon", ("avx512_bf16", "amx_bf16"), ()), "mixed_bfloat16"),
        (("Xeon", ("avx512_bf16",), ()), "mixed_bfloat16"),
        (("Old Xeon", (), ()), "float32"),
        (("Old Xeon", (), (("gpu", (8, 0)),)), "mixed_bfloat16"),
        (("Old Xeon", (), (("gpu", (7, 5)),)), "float32"),
        (("Old Xeon", (), (("tpu", ()),)), "mixed_bfloat16"),
    )
    for summary, expected in cases:
        device(summary)
        chosen, why = precision.choose_precision("auto")
        assert chosen == expected, summary
        assert why.startswith(f"auto: {expected} on CPU '{summary[0]}'"), why
    assert precision.choose_precision("float32") == ("float32", None)


def test_scoring_precision_defaults_to_auto(device):
    from keras_adtrs.defaults import SCORING_PRECISION
    from keras_adtrs.models import in_scoring_precision

    model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None)
    assert SCORING_PRECISION == "auto"
    device(("Old Xeon", (), ()))
    assert in_scoring_precision(model) == (model, "auto: float32 on CPU 'Old Xeon' without avx512_bf16/amx_bf16, "
                                                  "no GPU or TPU")
    device(("Xeon", ("amx_bf16",), ()))
    scoring, why = in_scoring_precision(model)
    assert scoring.precision == "mixed_bfloat16" and scoring is not model and "mixed_bfloat16" in why
    assert in_scoring_precision(model, "float32") == (model, None)
