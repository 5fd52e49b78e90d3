"""JAX backend: training step parity with TensorFlow, `.keras` JAX -> TF, numpy input pipeline.

The JAX parts run in subprocesses with KERAS_BACKEND=jax and TensorFlow
blocked from importing (the GPU machine has no TensorFlow); the TensorFlow
parts run in subprocesses with KERAS_BACKEND=tensorflow.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, shared_dir
from run_helpers import HELPER, TINY_SET, checkpoint_state, history_epochs, kill_after_first_checkpoint, run_env

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed"), pytest.mark.large]  # JAX compiles and subprocess runs

HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed")
LIVE_C = shared_dir() / "data" / "clive_dev"

BLOCK_TENSORFLOW = textwrap.dedent(
    """
    import sys

    class _BlockTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "tf_keras"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, _BlockTensorFlow())
    """
)

ASSERT_NO_TENSORFLOW = textwrap.dedent(
    """
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
    assert not loaded, loaded
    """
)

# A tiny model: every setting except the backend shared by both subprocesses. Default score
# head (score_scale 1, offset 0) on standardised labels, as the spec's working recipe trains.
MODEL_KWARGS = dict(crop_size=64, backbone_weights=None, dropout_rate=0.0, l2_weight_decay=1e-3)
# Initial weights (set on TensorFlow, loaded by JAX): see test_jax_train_step_reports_tensorflow_terms.
RESIDUAL_BRANCH_GAMMA = 0.1

COMMON = textwrap.dedent(
    f"""
    import json, sys
    import numpy as np
    import keras
    import keras_adtrs

    def batch():
        rng = np.random.default_rng(7)
        images = rng.uniform(0, 255, (6, 64, 64, 3)).astype("float32")
        labels = np.array([-0.76, 1.1, 0.08, -1.51, 1.6, 0.08], "float32")  # (y - 50) / 25, with a tie
        return images, labels

    def build():
        return keras_adtrs.build_adtrs(**{MODEL_KWARGS!r})

    def set_initial_weights(model):
        # Random score head (the layer is zero-initialised: all scores would be equal and the
        # score terms trivially identical); residual branches' last BatchNorm scale set small.
        kernel = model.network.get_layer("score_dense").kernel
        kernel.assign(np.random.default_rng(0).normal(0.0, 0.01, kernel.shape).astype("float32"))
        for layer in model.network.get_layer("resnet50").layers:
            if layer.name.endswith("_3_bn"):
                layer.gamma.assign(np.full(layer.gamma.shape, {RESIDUAL_BRANCH_GAMMA!r}, "float32"))

    def floats(terms):
        return {{k: float(np.asarray(v)) for k, v in terms.items()}}
    """
)


def run_python(code, backend, tmp_path, block_tensorflow=False, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", KERAS_ADTRS_DATA_DIR=str(tmp_path / "data"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    source = (BLOCK_TENSORFLOW if block_tensorflow else "") + COMMON + textwrap.dedent(code)
    if block_tensorflow:
        source += ASSERT_NO_TENSORFLOW
    result = subprocess.run(
        [sys.executable, "-c", source], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{backend} subprocess failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


TF_REFERENCE = """
keras.utils.set_random_seed(0)
model = build()
set_initial_weights(model)
model.save_weights("initial.weights.h5")
images, labels = batch()
inference = floats(model.compute_objective(images, labels, training=False))
model.compile(optimizer=keras.optimizers.Adam(1e-3))
step = floats(model.train_on_batch(images, labels, return_dict=True))
json.dump({"inference": inference, "train_step": step}, open("tensorflow_terms.json", "w"))
"""

JAX_RUN = """
model = build()
model.load_weights("initial.weights.h5")
images, labels = batch()
inference = floats(model.compute_objective(images, labels, training=False))
model.compile(optimizer=keras.optimizers.Adam(1e-3))
step = floats(model.train_on_batch(images, labels, return_dict=True))
evaluated = model.evaluate(images, labels, batch_size=6, verbose=0, return_dict=True)
assert set(evaluated) == set(step), (sorted(evaluated), sorted(step))
history = model.fit(images, labels, batch_size=6, epochs=1, verbose=0)  # the compiled step's batch: no retrace
assert np.isfinite(history.history["loss"]).all()
model.save("model.keras")
probe = np.random.default_rng(3).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
np.save("probe.npy", probe)
np.save("jax_predictions.npy", np.asarray(model.predict(probe, verbose=0)))
json.dump({"inference": inference, "train_step": step}, open("jax_terms.json", "w"))
"""

TF_LOAD = """
from keras_adtrs.models.adtrs import ADTRSModel
model = keras.saving.load_model("model.keras")
assert isinstance(model, ADTRSModel)
probe = np.load("probe.npy")
np.save("tensorflow_predictions.npy", np.asarray(model.predict(probe, verbose=0)))
try:
    from keras_adtrs.serving.export import export_model
except ImportError as exc:
    print("EXPORT-SKIPPED", exc)
else:
    print("EXPORTED", export_model(model, "export", num_crops=1))
"""


@pytest.fixture(scope="module")
def jax_cross_backend_run(tmp_path_factory):
    """TF: initial weights + reference terms; JAX (TensorFlow blocked): same terms, fit, save model.keras."""
    if not HAS_TF:
        pytest.skip("tensorflow is not installed (needed for the reference)")
    tmp_path = tmp_path_factory.mktemp("jax_cross_backend")
    run_python(TF_REFERENCE, "tensorflow", tmp_path)
    run_python(JAX_RUN, "jax", tmp_path, block_tensorflow=True)
    terms = {b: json.loads((tmp_path / f"{b}_terms.json").read_text()) for b in ("tensorflow", "jax")}
    return tmp_path, terms


def _max_difference(a, b):
    assert set(a) == set(b), (sorted(a), sorted(b))
    return max(abs(a[k] - b[k]) / max(1.0, abs(a[k])) for k in a)


def test_jax_objective_matches_tensorflow_in_inference_mode(jax_cross_backend_run):
    _, terms = jax_cross_backend_run
    difference = _max_difference(terms["tensorflow"]["inference"], terms["jax"]["inference"])
    print("max relative difference, inference terms:", difference)
    assert difference < 1e-4, (terms["tensorflow"]["inference"], terms["jax"]["inference"])


def test_jax_train_step_reports_tensorflow_terms(jax_cross_backend_run):
    """One training step (BatchNorm in training mode, dropout 0, L2 decay on): same reported terms.

    Both backends compute the same step: run entirely in float64 (JAX with
    x64, and Keras' JAX float64 -> float32 promotion in `result_type`, which
    makes BatchNorm compute in float32, patched off) the train-step terms
    agree to 1e-13. In float32 the difference is rounding amplified by the
    training-mode forward pass of a random-initialised ResNet50: with its
    default initialisation each residual branch (three BatchNorms with batch
    statistics) adds a unit-scale perturbation to the stream, and the ~1e-7
    rounding differences grow to ~1e-4 of `layer4` (the same at crop 64, 96
    and 128 and at batch 6 to 32; JAX jitted vs JAX eager differ as much).
    `ranking_consistency` (|ranking - ranking_flipped|, a small difference of
    two ~5-150 terms) carries up to ~12 score errors in absolute terms, so it
    differed by 3e-4 to 6e-4 (labels 0-100, score_scale 10) and 7e-5 to 3e-4
    (standardised labels, score_scale 1); every other term within 8e-5.

    Hence the initial weights: the last BatchNorm scale of every residual
    branch set to 0.1 (the small/zero "residual gamma" initialisation of
    ResNets), which makes the forward pass well conditioned while every layer
    still contributes (`layer4` then differs by ~3e-6), and standardised
    labels with the default score head. Measured with 3 seeds each at crop
    64 / batch 6 and crop 96 / batch 8: every term within 1.6e-5.
    """
    _, terms = jax_cross_backend_run
    tf_step, jax_step = terms["tensorflow"]["train_step"], terms["jax"]["train_step"]
    assert set(tf_step) == {"loss", "quality", "quality_flipped", "consistency", "consistency_flipped",
                            "ranking", "ranking_flipped", "ranking_consistency"}
    print("train-step terms, tensorflow:", tf_step, "jax:", jax_step)
    difference = _max_difference(tf_step, jax_step)
    print("max relative difference, train-step terms:", difference)
    assert difference < 1e-4, (tf_step, jax_step)


def test_jax_trained_keras_file_loads_on_tensorflow_and_exports(jax_cross_backend_run):
    tmp_path, _ = jax_cross_backend_run
    out = run_python(TF_LOAD, "tensorflow", tmp_path)
    jax_pred = np.load(tmp_path / "jax_predictions.npy")
    tf_pred = np.load(tmp_path / "tensorflow_predictions.npy")
    assert jax_pred.shape == tf_pred.shape == (3,)
    np.testing.assert_allclose(tf_pred, jax_pred, rtol=1e-4, atol=1e-4)
    if "EXPORT-SKIPPED" in out:
        pytest.skip(f"keras_adtrs.serving.export.export_model not available: {out.strip()}")
    assert "EXPORTED" in out


JAX_SCORE_WITHOUT_IMPORTING_TENSORFLOW = """
model = build()
images = [np.random.default_rng(1).integers(0, 256, (80, 70, 3), dtype=np.uint8), "probe.png"]
from PIL import Image
Image.fromarray(np.random.default_rng(2).integers(0, 256, (50, 90, 3), dtype=np.uint8)).save("probe.png")
scores = keras_adtrs.score(model, images, crops=2, batch_size=4)
random_crops = keras_adtrs.score(model, images, crops=2, crop_mode="random", seed=3)
assert scores.shape == random_crops.shape == (2,) and np.isfinite(scores).all()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
assert not loaded, loaded
print("NO-TENSORFLOW-OK")
"""


def test_jax_build_and_score_do_not_import_tensorflow(tmp_path):
    """Under KERAS_BACKEND=jax, building and scoring a model never import TensorFlow, although it is
    installed (decoding in Pillow, crops in numpy). (Keras' own `model.save` imports it when installed.)"""
    assert "NO-TENSORFLOW-OK" in run_python(JAX_SCORE_WITHOUT_IMPORTING_TENSORFLOW, "jax", tmp_path)


# ------------------------------------------------------------------ training run without TensorFlow
JAX_TRAINING_RUN = """
import csv, os
from PIL import Image
from keras_adtrs.training.config import TrainConfig
from keras_adtrs.training.run import run_training

rng = np.random.default_rng(0)
os.makedirs("images", exist_ok=True)
rows = []
for i in range(28):
    h, w = (48, 80) if i == 0 else (int(rng.integers(64, 96)), int(rng.integers(64, 96)))
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if i == 1:
        image = image.convert("L")
    if i == 2:
        image = image.convert("RGBA")
    name = f"im{i}.png" if i % 3 else f"im{i}.jpg"
    image.convert("RGB").save(os.path.join("images", name)) if name.endswith(".jpg") else image.save(os.path.join("images", name))
    rows.append((name, float(rng.uniform(0, 100))))
with open("scores.csv", "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["image", "score"])
    writer.writerows(rows)
config = TrainConfig(dataset="csv", csv="scores.csv", manual_dir="images", crop_size=64, crops_per_image=1,
                     batch_size=4, epochs=2, steps_per_epoch=2, test_crops=2, backbone_weights=None,
                     learning_rate=1e-4, output_dir="run", verbose=0)
results = run_training(config)
for name in ("config.json", "split.json", "metrics.json", "history.csv", "model.keras", "test_predictions.csv"):
    assert os.path.exists(os.path.join("run", name)), name
assert results["backend"] == "jax" and results["best_epoch"] in (1, 2)
assert json.load(open("run/config.json"))["settings"]["jit_compile"] is True  # the JAX step is always jitted
assert set(results["test"]) >= {"srcc", "plcc"}
header = open("run/history.csv").readline()
assert "val_srcc" in header and "ranking_consistency" in header, header
print("JAX-RUN-OK", json.dumps(results["test"]))
"""


@pytest.mark.slow  # bash .ci/run-slow; the default suite's JAX kill-and-resume runs without TensorFlow too
def test_jax_training_run_without_tensorflow(tmp_path):
    out = run_python(JAX_TRAINING_RUN, "jax", tmp_path, block_tensorflow=True)
    assert "JAX-RUN-OK" in out


def test_killed_jax_run_resumes_at_the_next_epoch(tmp_path):
    """The one training driver resumes on JAX as on TensorFlow: SIGKILL after the first epoch's checkpoint,
    and the same command continues from the second epoch, with every epoch in history.csv once; TensorFlow
    unimportable throughout (a JAX-only machine)."""
    out = tmp_path / "run"
    args = ["--block-tensorflow", "--backend", "jax", *TINY_SET, "--epochs", "3", "--steps-per-epoch", "2",
            "--output-dir", str(out)]
    state = kill_after_first_checkpoint(args, out, run_env())
    assert state["epoch"] == 1 and state["step"] == 0, state  # killed between epochs 1 and 2
    assert not (out / "metrics.json").exists()
    result = subprocess.run([sys.executable, HELPER, *args], cwd=REPO, env=run_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "resuming from epoch 2, step 0" in result.stdout and "(jax backend)" in result.stdout
    assert "NO-TENSORFLOW-IMPORTED" in result.stdout
    assert "Epoch 1/3" not in result.stdout and "Epoch 2/3" in result.stdout  # no finished epoch repeated
    assert history_epochs(out) == [0, 1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "jax" and metrics["epochs_run"] == 2 and metrics["best_epoch"] in (1, 2, 3)
    assert checkpoint_state(out)["epoch"] == 3


def test_jax_refuses_a_tf_distribute_strategy(tmp_path):
    result = subprocess.run([sys.executable, HELPER, "--backend", "jax", *TINY_SET, "--epochs", "1", "--strategy",
                             "mirrored", "--output-dir", str(tmp_path / "run")], cwd=REPO, env=run_env(),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    assert "error: --strategy 'mirrored' is a tf.distribute strategy: the JAX backend trains on one device" in result.stderr


# ------------------------------------------------------------------ numpy input pipeline (in process)
def test_jax_pipeline_training_crops_are_seeded_per_epoch():
    from keras_adtrs.data.pipeline_numpy import TrainingCrops

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3), dtype=np.uint8) for _ in range(10)]
    scores = np.arange(10, dtype=np.float32)
    ds = TrainingCrops(images, scores, 64, crops_per_image=3, batch_size=4, seed=5, epochs=3)
    assert len(ds) == 3 * (30 // 4)
    x, y = ds[0]
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.float32 and y.shape == (4,)
    again = TrainingCrops(images, scores, 64, crops_per_image=3, batch_size=4, seed=5, epochs=3)
    np.testing.assert_array_equal(again[8][0], ds[8][0])  # any order, same batch
    assert not np.array_equal(ds[0][0], ds[7][0])  # epoch 1 differs from epoch 0
    other_seed = TrainingCrops(images, scores, 64, crops_per_image=3, batch_size=4, seed=6, epochs=3)
    assert not np.array_equal(other_seed[0][0], ds[0][0])
    # Every crop of an epoch is used once per epoch: labels are a permutation (minus the dropped rest).
    labels = np.concatenate([ds[i][1] for i in range(7)])
    assert np.all(np.bincount(labels.astype(int), minlength=10) <= 3)
    resumed = TrainingCrops(images, scores, 64, crops_per_image=3, batch_size=4, seed=5, epochs=3, initial_epoch=1)
    np.testing.assert_array_equal(resumed[0][0], ds[7][0])


@needs_tf
def test_jax_pipeline_resize_and_grid_match_tensorflow():
    import tensorflow as tf

    from keras_adtrs.data import crops, crops_tensorflow

    rng = np.random.default_rng(2)
    for h, w in [(37, 50), (64, 20), (5, 7), (63, 64), (100, 31)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for size in [(64, 87), (200, 64), (13, 9)]:
            ours = crops.resize_bilinear(image, *size)
            theirs = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear").numpy()
            np.testing.assert_allclose(ours, theirs, atol=1e-3)
        ours = crops.grid_crops(image, 64, 5)
        theirs = crops_tensorflow.grid_crops(tf.constant(image), 64, 5).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-3)
    big = rng.integers(0, 256, (130, 97, 3), dtype=np.uint8)
    np.testing.assert_array_equal(crops.grid_crops(big, 64, 9), crops_tensorflow.grid_crops(tf.constant(big), 64, 9).numpy())


@needs_tf
def test_jax_pipeline_pil_decoding_matches_tensorflow(tmp_path):
    import io

    import tensorflow as tf
    from PIL import Image

    from keras_adtrs.data.images import decode_image_pil, decode_image_tensor

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cases = {}
    for mode in ("RGB", "L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
        cases[mode] = buffer.getvalue()
    buffer = io.BytesIO()
    Image.fromarray((pixels[:, :, 0].astype(np.uint16) * 257 + 3)).save(buffer, "PNG")
    cases["I;16"] = buffer.getvalue()
    for mode, data in cases.items():
        ours = decode_image_pil(data)
        theirs = decode_image_tensor(tf.constant(data)).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=mode)
    # JPEG: the decoders may differ by a few levels.
    jpeg = sorted((LIVE_C / "ChallengeDB_release" / "Images").glob("*.JPG"))[:2] if LIVE_C.exists() else []
    if not jpeg:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=80)
        blobs = [buffer.getvalue()]
    else:
        blobs = [p.read_bytes() for p in jpeg]
    for data in blobs:
        ours = decode_image_pil(data).astype(int)
        theirs = decode_image_tensor(tf.constant(data)).numpy().astype(int)
        assert ours.shape == theirs.shape
        print("PIL vs TF JPEG: max", np.abs(ours - theirs).max(), "mean", np.abs(ours - theirs).mean())
        # Observed on LIVE-C JPEGs: mean ~1 level, a few tens at most on sharp edges.
        assert np.abs(ours - theirs).mean() < 2.5 and np.abs(ours - theirs).max() <= 64


@pytest.mark.skipif(not LIVE_C.exists(), reason="LIVE-C dev subset not present")
def test_jax_pipeline_reads_live_challenge_release():
    from keras_adtrs.data.crops import grid_crops
    from keras_adtrs.data.images import load_image
    from keras_adtrs.data.live_challenge import load_live_challenge

    source = load_live_challenge(str(LIVE_C))
    assert len(source) == 200 and source.names == sorted(source.names)  # the TFDS source's order
    assert not any(name.lower().startswith("t") and name.lower().endswith(".bmp") for name in source.names)
    assert abs(float(source.scores[source.names.index("103.bmp")]) - 39.23455873) < 1e-4
    assert 0 <= source.scores.min() and source.scores.max() <= 100
    crops = grid_crops(load_image(source.images[0], decoder="pil"), 64, 4)
    assert crops.shape == (4, 64, 64, 3) and crops.dtype == np.float32
