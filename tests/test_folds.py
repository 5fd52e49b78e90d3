"""`train --folds K`: grouped K-fold cross-validation, pooled out-of-fold metrics, the final model; and
`evaluate --baseline` on the same folds."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from run_helpers import run_env, run_train

pytestmark = pytest.mark.large

IMAGES = 18
#: Pairs of images share a reference (a `reference` column): a fold must hold both or neither.
TINY_FOLDS = ["--crop-size", "64", "--epochs", "2", "--steps-per-epoch", "1", "--crops-per-image", "1",
              "--batch-size", "4", "--test-crops", "1", "--validation-fraction", "0.2", "--backbone-weights",
              "none", "--quiet"]


def _scene(rng, size):
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + rng.uniform(0, 3)), np.cos(5 * y + rng.uniform(0, 3)), x * y], axis=-1)
    return 127 + 90 * base


@pytest.fixture(scope="module")
def csv_set(tmp_path_factory):
    """18 photos-like images (224 px) with noise at 9 levels, two per reference, and clean ones to fit NIQE on."""
    root = tmp_path_factory.mktemp("folds")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "pristine").mkdir()
    rows = []
    for i in range(IMAGES):
        level = i // 2
        pixels = _scene(np.random.default_rng(100 + level), 224) + rng.normal(0, 3 + 6 * level, (224, 224, 3))
        name = f"im{i:02d}.png"
        Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(root / "images" / name)
        rows.append((name, f"{90 - 8 * level + rng.uniform(0, 2):.3f}", f"ref{level}"))
    for k in range(4):  # 36 patches of 96 each: enough sharp ones for NIQE's pristine model
        Image.fromarray(_scene(np.random.default_rng(500 + k), 576).clip(0, 255).astype("uint8")).save(
            root / "pristine" / f"clean{k}.png")
    with open(root / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score", "reference"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def folds_run(csv_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("folds-run") / "run"
    result = run_train(["--dataset", "csv", "--csv", str(csv_set / "scores.csv"), "--manual-dir",
                        str(csv_set / "images"), "--folds", "2", *TINY_FOLDS, "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_folds_test_every_image_once_and_pool_their_predictions(folds_run):
    out = folds_run
    record = json.loads((out / "folds.json").read_text())
    assert record["folds"] == 2 and record["seed"] == 0
    with open(out / "oof_predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    names = [r["file_name"] for r in rows]
    assert sorted(names) == [f"im{i:02d}.png" for i in range(IMAGES)]  # every image tested exactly once
    fold_of = {r["file_name"]: int(r["fold"]) for r in rows}
    for level in range(IMAGES // 2):  # grouping respected: both images of a reference in one fold
        assert fold_of[f"im{2 * level:02d}.png"] == fold_of[f"im{2 * level + 1:02d}.png"]
    tested = []
    for k in range(2):
        split = json.loads((out / f"fold-{k}" / "split.json").read_text())
        assert not set(split["test"]) & set(split["train"] + split["validation"])
        assert split["validation"], "each fold selects its epoch on a validation part of its own training images"
        assert set(split["test"]) == {n for n, f in fold_of.items() if f == k}
        tested += split["test"]
        with open(out / f"fold-{k}" / "test_predictions_by_epoch.csv") as handle:
            header = next(csv.reader(handle))
        assert header == ["file_name", "score", "epoch_1", "epoch_2"]
        history = (out / f"fold-{k}" / "history.csv").read_text().splitlines()[0]
        assert "val_srcc" in history and "test_srcc" in history
    assert sorted(tested) == sorted(names)
    pooled = record["pooled"]
    assert pooled["num_items"] == IMAGES
    assert pooled["srcc"]["ci_low"] <= pooled["srcc"]["value"] <= pooled["srcc"]["ci_high"]
    predictions = np.array([float(r["prediction"]) for r in rows])
    assert np.ptp(predictions) > 0  # the models' scores differ across images
    assert [r["epoch"] for r in record["pooled_srcc_by_epoch"]] == [1, 2]
    assert len(record["per_fold"]) == 2 and all(r["best_epoch"] in (1, 2) for r in record["per_fold"])
    # The final model: every image, the epoch count the folds chose.
    epochs = record["final_epochs"]
    assert epochs in (1, 2) and record["final_model"]["epochs_run"] == epochs
    final = json.loads((out / "final" / "config.json").read_text())
    assert final["split"]["counts"] == {"train": IMAGES, "validation": 0, "test": 0}
    assert (out / "final" / "model.keras").is_file()
    assert (out / "final" / "export" / "adtrs" / "1" / "saved_model.pb").is_file()


def test_evaluate_prints_the_yardsticks_on_the_same_folds(folds_run, csv_set, tmp_path):
    """`evaluate --model FOLDS_RUN --baseline niqe brisque`: the model's pooled out-of-fold metrics beside
    NIQE (fitted on clean images, no score) and BRISQUE (fitted on each fold's training labels)."""
    out = tmp_path / "evaluation"
    result = subprocess.run(
        [sys.executable, "-m", "keras_adtrs.evaluate", "--model", str(folds_run), "--baseline", "niqe", "brisque",
         "--pristine", str(csv_set / "pristine"), "--bootstrap", "50", "--no-progress", "--output-dir", str(out)],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2-fold pooled out-of-fold (18 images)" in result.stdout
    assert "niqe on the same 18 images" in result.stdout and "brisque on the same 18 images" in result.stdout
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["num_items"] == IMAGES
    for name in ("niqe", "brisque"):
        baseline = evaluation["baselines"][name]
        assert sorted(baseline["indices"]) == list(range(IMAGES)) and baseline["num_items"] == IMAGES
        assert np.ptp(baseline["predictions"]) > 0
    # Noise drives the scores here: both yardsticks rank the images the right way round.
    assert evaluation["baselines"]["niqe"]["srcc"]["value"] > 0.5
    assert evaluation["baselines"]["brisque"]["srcc"]["value"] > 0.5
    assert (out / "niqe_model.npz").is_file()
    # A folder that is not a K-fold run is named.
    refused = subprocess.run([sys.executable, "-m", "keras_adtrs.evaluate", "--model", str(tmp_path)], cwd=REPO,
                             env=run_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "no folds.json there" in refused.stderr


def test_a_rerun_keeps_the_folds_that_finished(folds_run, csv_set, tmp_path):
    """A K-fold run killed after its folds, run again into its folder: the finished folds are kept, not retrained
    (a fold that was interrupted resumes from its checkpoint as any run does: test_distribute.py)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(folds_run, out)
    shutil.rmtree(out / "final")
    (out / "oof_predictions.csv").unlink()
    with open(folds_run / "oof_predictions.csv") as handle:
        before = {r["file_name"]: r for r in csv.DictReader(handle)}
    kept = [(out / f"fold-{k}" / "model.keras").stat().st_mtime_ns for k in range(2)]
    result = run_train(["--dataset", "csv", "--csv", str(csv_set / "scores.csv"), "--manual-dir",
                        str(csv_set / "images"), "--folds", "2", *TINY_FOLDS, "--no-final-model",
                        "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(out / f"fold-{k}" / "model.keras").stat().st_mtime_ns for k in range(2)] == kept  # not trained again
    with open(out / "oof_predictions.csv") as handle:
        after = {r["file_name"]: r for r in csv.DictReader(handle)}
    assert after == before
    # Other settings or other test images: not the same fold, so it would be trained again.
    from keras_adtrs.training.protocol import finished_fold
    from keras_adtrs.training.run_dir import RunDir

    run = RunDir(str(out / "fold-0"))
    settings = run.settings()
    names = list(before)
    test_names = [n for n in names if before[n]["fold"] == "0"]
    assert finished_fold(run, settings, test_names) is not None
    assert finished_fold(run, {**settings, "crop_size": 96}, test_names) is None
    assert finished_fold(run, settings, test_names[1:]) is None
