"""Quality-aware pre-training: distortions, batches, the objective, --init-from, the command and resuming."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, random_score_head
from keras_adtrs.data import distortions
from keras_adtrs.data.pretraining import DistortionBatches, num_classes, procedural_references
from keras_adtrs.errors import SettingError
from keras_adtrs.models.backbone import ADTRSBackbone
from run_helpers import checkpoint_state, run_env


pytestmark = pytest.mark.large  # pre-training runs


@pytest.fixture(scope="module")
def references():
    return procedural_references(6, seed=5, size=112)


# ------------------------------------------------------------------ distortions
@pytest.mark.parametrize("kind", distortions.KINDS)
def test_distortions_are_deterministic_and_graded(kind, references):
    """Same rng state, same pixels; a higher level is worse by a full-reference measure (colour SSIM)."""
    for image in references[:3]:
        first = distortions.distort(image, kind, 3, np.random.default_rng(7))
        again = distortions.distort(image, kind, 3, np.random.default_rng(7))
        np.testing.assert_array_equal(first, again)
        assert first.dtype == np.uint8 and first.shape == image.shape
    assert distortions.distort(references[0], kind, 0, np.random.default_rng(0)) is references[0]
    # Averaged over the references (one noise pattern per image for every level, as in a group).
    similarity = np.mean(
        [[distortions.colour_ssim(im, distortions.distort(im, kind, level, np.random.default_rng(i)))
          for level in range(distortions.NUM_LEVELS + 1)] for i, im in enumerate(references)],
        axis=0,
    )
    assert np.all(np.diff(similarity) < 0), f"{kind}: colour SSIM by level {np.round(similarity, 4)}"


def test_distortion_errors_name_the_value(references):
    with pytest.raises(ValueError, match="unknown distortion 'fog'"):
        distortions.distort(references[0], "fog", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="level must be 0..5, got 6"):
        distortions.distort(references[0], "blur", 6, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fog"):
        distortions.check_kinds(["blur", "fog"])


def test_default_set_uses_the_same_distortions():
    from keras_adtrs.data import synthetic

    assert synthetic.DISTORTIONS == distortions.DEFAULT_SET_KINDS == distortions.KINDS[:5]


# --------------------------------------------------------------------- batches
def test_batches_are_a_pure_function_of_seed_and_step(references):
    kinds = ("blur", "noise", "desaturation")
    data = DistortionBatches(references, 64, kinds, groups=2, levels=3, steps=5, seed=3)
    x, y = data[2]
    assert x.shape == (6, 64, 64, 3) and x.dtype == np.float32
    assert set(y) == {"level", "class", "fr"}
    levels = y["level"].reshape(2, 3)
    assert np.all(levels[:, 0] == 0) and np.all(np.diff(levels, axis=1) > 0)  # pristine first, then worse
    classes = y["class"].reshape(2, 3)
    assert np.all(classes[:, 0] == 0) and classes.max() < num_classes(kinds)
    assert np.all(y["fr"].reshape(2, 3)[:, 0] == pytest.approx(1.0))
    # A run resumed at step 2 sees the batch an uninterrupted run sees there.
    resumed = DistortionBatches(references, 64, kinds, groups=2, levels=3, steps=5, seed=3, initial_step=2)
    np.testing.assert_array_equal(resumed[0][0], x)
    assert len(resumed) == 3
    other = DistortionBatches(references, 64, kinds, groups=2, levels=3, steps=5, seed=4)
    assert not np.array_equal(other[2][0], x)
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(ValueError, match="levels per group"):
        DistortionBatches(references, 64, kinds, groups=2, levels=7, steps=5)


def test_load_reference_images_reports_what_it_skips(tmp_path):
    from PIL import Image

    from keras_adtrs.data.pretraining import load_reference_images

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    images, report = load_reference_images([str(tmp_path)], crop_size=64, scales=(128, 256, 512), progress=False)
    assert report["files"] == [str(tmp_path / "photo.jpg")]
    assert set(report["skipped"]) == {str(tmp_path / "tiny.png"), str(tmp_path / "broken.jpg")}
    assert "broken.jpg" in report["skipped"][str(tmp_path / "broken.jpg")]
    assert sorted(min(im.shape[:2]) for im in images) == [128, 256]  # the scales it reaches
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_reference_images([str(tmp_path / "missing")], crop_size=64)
    (tmp_path / "photo.jpg").unlink()
    with pytest.raises(ValueError, match="no usable image"):
        load_reference_images([str(tmp_path)], crop_size=64, progress=False)


# ------------------------------------------------------------------- objective
def test_ranking_loss_orders_levels_within_groups():
    from keras import ops

    from keras_adtrs.models.pretraining import ranking_loss

    levels = np.array([0, 1, 3, 0, 2, 5], "float32")
    good = np.array([3.0, 2.0, 1.0, 9.0, 5.0, 1.0], "float32")  # decreasing within each group
    assert float(ops.convert_to_numpy(ranking_loss(good, levels, 3, 0.1))) == 0.0
    bad = good[[2, 1, 0, 5, 4, 3]]
    assert float(ops.convert_to_numpy(ranking_loss(bad, levels, 3, 0.1))) > 1.0


def test_pretraining_lowers_its_loss_and_round_trips(references, tmp_path):
    import keras

    from keras_adtrs.models.pretraining import PretrainingModel

    keras.utils.set_random_seed(0)
    kinds = ("blur", "noise", "exposure")
    x, y = DistortionBatches(references, 64, kinds, groups=2, levels=4, steps=1, seed=0)[0]
    model = PretrainingModel(ADTRSBackbone(crop_size=64), num_classes(kinds), group_size=4,
                             objective="ranking+classification+fr")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = [float(model.train_on_batch(x, y, return_dict=True)["loss"]) for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0], losses
    logs = model.train_on_batch(x, y, return_dict=True)
    assert {"ranking", "classification", "fr", "loss"} <= set(logs)
    path = tmp_path / "pretraining.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config()
    # Float32 rounding only (oneDNN may order the sums otherwise between two calls).
    np.testing.assert_allclose(np.asarray(loaded(x)["logits"]), np.asarray(model(x)["logits"]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="objective 'ranking\\+vibes'"):
        PretrainingModel(ADTRSBackbone(crop_size=64), 4, group_size=4, objective="ranking+vibes")


# ------------------------------------------------------------------- init_from
def test_init_from_copies_backbone_and_block_exactly(tmp_path):
    import keras

    import keras_adtrs

    source = random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None))
    for variable in source.network.get_layer("attention_downsample").weights:
        variable.assign(variable.value + 0.01)  # differs from a fresh block
    path = tmp_path / "source.keras"
    source.save(path)
    model = keras_adtrs.build_adtrs(crop_size=64, init_from=str(path), score_scale=3.0, score_offset=1.0)
    for theirs, ours in zip(source.backbone.stages.weights, model.backbone.stages.weights):
        np.testing.assert_array_equal(np.asarray(theirs.value), np.asarray(ours.value))
    for theirs, ours in zip(source.network.get_layer("attention_downsample").weights,
                            model.network.get_layer("attention_downsample").weights):
        np.testing.assert_array_equal(np.asarray(theirs.value), np.asarray(ours.value))
    # The head starts afresh: its score layer is zero-initialised, the scale is the new one.
    assert not np.any(np.asarray(model.network.get_layer("score_dense").kernel.value))
    assert model.score_scale == 3.0
    info = model.backbone_weights_info["init_from"]
    assert info["path"] == str(path) and info["attention_block"] == "copied"
    # Another crop: everything but the bias table, whose shape depends on the grid.
    other = keras_adtrs.build_adtrs(crop_size=96, init_from=str(path))
    assert "attention_biases" in other.backbone_weights_info["init_from"]["attention_block"]

    (tmp_path / "notes.keras").write_text("not a model")
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    tiny.save(tmp_path / "dense.keras")
    for bad, message in ((tmp_path / "missing.keras", "no such file"),
                         (tmp_path / "notes.keras", "not a .keras file"),
                         (tmp_path / "dense.keras", "not an ADTRS backbone")):
        with pytest.raises(SettingError, match=message) as error:
            keras_adtrs.build_adtrs(crop_size=64, init_from=str(bad))
        assert error.value.setting == "init_from" and str(bad) in str(error.value)
    with pytest.raises(SettingError, match="incompatible backbone .*architecture 'resnet50' there, 'resnet50_v1_5' here"):
        keras_adtrs.build_adtrs(crop_size=64, backbone="resnet50_v1_5", init_from=str(path))
    with pytest.raises(SettingError, match="both set the backbone's weights"):
        keras_adtrs.build_adtrs(crop_size=64, backbone_weights=str(path), init_from=str(path))
    # A backbone saved alone is a backbone to start from too.
    source.backbone.save(tmp_path / "backbone.keras")
    alone = keras_adtrs.build_adtrs(crop_size=64, init_from=str(tmp_path / "backbone.keras"))
    np.testing.assert_array_equal(np.asarray(alone.backbone.stages.weights[0].value),
                                  np.asarray(source.backbone.stages.weights[0].value))


# ------------------------------------------------------------------ the command
TINY_PRETRAIN = ["--crop-size", "64", "--groups", "2", "--levels", "3", "--procedural-references", "8",
                 "--steps", "4", "--steps-per-epoch", "2", "--kinds", "blur,noise,underexposure"]


@pytest.mark.slow  # bash .ci/run-slow; the default suite keeps the training run's kill-and-resume (the same resume module) and init_from
def test_killed_pretraining_resumes_and_train_starts_from_it(tmp_path):
    """SIGKILL after the first epoch's checkpoint; the same command finishes; train --init-from uses it."""
    out = tmp_path / "pretrain"
    command = [sys.executable, "-m", "keras_adtrs.pretrain", *TINY_PRETRAIN, "--output-dir", str(out)]
    process = subprocess.Popen(command, cwd=REPO, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    started = time.time()
    try:
        while (checkpoint_state(out) or {}).get("global_step", 0) < 2:
            if process.poll() is not None:
                pytest.fail("pre-training ended before it could be killed:\n" + process.stdout.read()[-3000:])
            if time.time() - started > 600:
                pytest.fail("no checkpoint in time")
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "metrics.json").exists()
    result = subprocess.run(command, cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming from step 2" in result.stdout
    assert "Epoch 1/2" not in result.stdout  # the finished epoch is not run again
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "classification"] and len(history) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["steps_run"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["objective"] == "ranking+classification" and "resumed" in config
    assert config["images"]["source"] == "procedural"
    assert not (out / "checkpoint").exists()  # removed when the run ended cleanly

    run = tmp_path / "train"
    result = subprocess.run(
        [sys.executable, "-m", "keras_adtrs.train", "--crop-size", "64", "--epochs", "1", "--steps-per-epoch", "1",
         "--crops-per-image", "1", "--batch-size", "8", "--test-crops", "1", "--no-export",
         "--init-from", str(out / "model.keras"), "--output-dir", str(run)],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    record = json.loads((run / "config.json").read_text())
    assert record["settings"]["init_from"] == str(out / "model.keras")
    assert record["backbone_weights"]["init_from"]["path"] == str(out / "model.keras")
    assert "RANDOM WEIGHTS" not in result.stderr  # no ImageNet download was attempted


def test_pretrain_command_refuses_bad_settings(tmp_path):
    from keras_adtrs.training.config import PretrainConfig
    from keras_adtrs.training.pretraining import check_config

    with pytest.raises(SettingError, match="kinds .*unknown distortion"):
        check_config(PretrainConfig(kinds="blur,fog"))
    with pytest.raises(SettingError, match="levels must be 2..6, got 9"):
        check_config(PretrainConfig(levels=9))
    with pytest.raises(SettingError, match="crop_size must be a multiple of 32"):
        check_config(PretrainConfig(crop_size=100))
    result = subprocess.run([sys.executable, "-m", "keras_adtrs.pretrain", "--images", str(tmp_path / "none"),
                             "--output-dir", str(tmp_path / "out")], cwd=REPO, env=run_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "no such folder" in result.stderr and "Traceback" not in result.stderr


JAX_PRETRAINING_RUN = """
import os
from keras_adtrs.training.config import PretrainConfig
from keras_adtrs.training.pretraining import run_pretraining


config = PretrainConfig(crop_size=64, groups=2, levels=3, procedural_references=6, steps=2, steps_per_epoch=1,
                        kinds="blur,noise", output_dir="run", verbose=0)
results = run_pretraining(config)
for name in ("config.json", "metrics.json", "history.csv", "model.keras"):
    assert os.path.exists(os.path.join("run", name)), name
assert results["steps"] == 2 and json.load(open("run/config.json"))["versions"]["keras_backend"] == "jax"
print("JAX-PRETRAIN-OK")
"""


def test_pretraining_runs_on_jax_without_tensorflow(tmp_path):
    from test_jax_backend import run_python

    assert "JAX-PRETRAIN-OK" in run_python(JAX_PRETRAINING_RUN, "jax", tmp_path, block_tensorflow=True)


def test_loss_weights_option_selects_terms():
    from keras_adtrs.training.config import parse_loss_weights

    assert parse_loss_weights(None) == {}
    assert parse_loss_weights("ranking=0, ranking_consistency=0") == {"ranking": 0.0, "ranking_consistency": 0.0}
    for bad, message in (("ranking", "not TERM=WEIGHT"), ("fun=1", "not TERM=WEIGHT"),
                         ("ranking=x", "not a number"), ("consistency=-1", "finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            parse_loss_weights(bad)
