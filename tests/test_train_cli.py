"""`python -m keras_adtrs.train` at tiny size writes every promised file."""

import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from run_helpers import HELPER, TINY, TINY_SET, run_env, run_train

pytestmark = pytest.mark.large  # the train command in subprocesses


@pytest.fixture(scope="module")
def tiny_run(default_data_dir, tmp_path_factory):
    """One tiny run of the train command (its folder and the finished process)."""
    out = tmp_path_factory.mktemp("train") / "run"
    result = run_train([*TINY, "--data-dir", default_data_dir, "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_train_command_writes_every_file(tiny_run):
    out, result = tiny_run
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "split.json", "test_predictions.csv"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("events.out.tfevents*")), "no TensorBoard logs"
    assert (out / "export" / "adtrs" / "1" / "saved_model.pb").is_file()
    # A run that ended cleanly leaves no resume checkpoint behind (--keep-checkpoint keeps it).
    assert not (out / "checkpoint").exists()

    metrics = json.loads((out / "metrics.json").read_text())
    for part in ("test", "validation"):
        assert set(metrics[part]) >= {"srcc", "plcc", "krcc", "rmse"}
    assert metrics["best_epoch"] in (1, 2)
    # The default backbone is imagenet; here the download cannot happen: loud and recorded.
    assert "random" in metrics["backbone_weights"]["source"] and "error" in metrics["backbone_weights"]
    assert "RANDOM WEIGHTS" in result.stderr

    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["seed"] == 0 and config["settings"]["crop_size"] == 64
    assert config["backbone_weights"]["requested"] == "imagenet"
    assert config["data_set"]["name"] == "default"
    assert set(config["split"]["counts"]) == {"train", "validation", "test"}
    assert {"keras", "tensorflow", "numpy"} <= set(config["versions"])

    with open(out / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"loss", "quality", "ranking", "val_srcc", "val_plcc"} <= set(rows[0])

    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    assert "SRCC" in result.stdout and str(out) in result.stdout
    # Clean output: no TensorFlow start-up log lines.
    assert "I0000" not in result.stderr and "E0000" not in result.stderr, result.stderr[:2000]


def test_unwritable_output_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_train([*TINY, "--output-dir", str(blocker / "run")])
    assert result.returncode != 0
    assert "not writable" in result.stderr and "Epoch" not in result.stdout


def test_repeated_splits_protocol_keeps_each_split(tmp_path):
    out = tmp_path / "protocol"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "distribute_helpers.py"), "--dataset", "tiny", *TINY,
         "--epochs", "1", "--splits", "2", "--no-export", "--backbone-weights", "none", "--output-dir", str(out)],
        cwd=REPO, env={**os.environ, "KERAS_ADTRS_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    protocol = json.loads((out / "protocol.json").read_text())
    assert protocol["splits"] == 2 and protocol["seeds"] == [0, 1]
    assert len(protocol["runs"]) == 2 and {"median", "std", "min", "max"} <= set(protocol["test"]["srcc"])
    for k in range(2):
        assert (out / f"split-{k}" / "metrics.json").is_file()
    splits = [json.loads((out / f"split-{k}" / "split.json").read_text())["test"] for k in range(2)]
    assert splits[0] != splits[1]
    assert "over 2 splits" in result.stdout


def test_evaluate_reads_the_run_folder_train_wrote(tiny_run, tmp_path):
    """`python -m keras_adtrs.evaluate --model RUN/model.keras`, no --dataset: the run's set, folders and split."""
    out, _ = tiny_run
    result = subprocess.run(
        [sys.executable, "-m", "keras_adtrs.evaluate", "--model", str(out / "model.keras"), "--bootstrap", "20",
         "--no-progress", "--output-dir", str(tmp_path)],
        cwd=REPO, env={**os.environ, "KERAS_ADTRS_OFFLINE": "1"}, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    split = json.loads((out / "split.json").read_text())
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert evaluation["dataset"] == "default" and evaluation["split"] == "test"
    assert evaluation["names"] == split["test"]  # the run's test part, recomputed from its seed and fractions
    assert evaluation["crops"] == settings["test_crops"] == 1
    assert evaluation["split_config"]["from"] == str(out / "config.json")
    assert "I0000" not in result.stderr and "E0000" not in result.stderr, result.stderr[:2000]


@pytest.mark.large
def test_recipe_file_fills_the_settings_and_flags_override_it(tmp_path):
    """`train --config FILE`: the recipe fills the table (YAML and JSON), flags given on the command line win."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("crop-size: 64\nepochs: 3\nbatch_size: 8\nlinear_probe_epochs: 1\nbackbone_lr_ratio: 0.1\n"
                      "freeze_batchnorm: true\nlearning_rate: '3e-4'\n")
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, HELPER, "--config", str(recipe), *TINY_SET, "--epochs", "1", "--steps-per-epoch", "1",
         "--output-dir", str(out)], cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "config.json").read_text())
    settings = record["settings"]
    assert settings["config_file"] == str(recipe)
    assert (settings["crop_size"], settings["batch_size"], settings["learning_rate"]) == (64, 8, 3e-4)  # the recipe
    assert settings["epochs"] == 1  # the flag
    assert record["fine_tuning"] == {"backbone_lr_ratio": 0.1, "freeze_batchnorm": True, "linear_probe_epochs": 1}
    # A JSON recipe naming a setting that does not exist, or a value of the wrong type, is refused by name.
    for text, named in (('{"crop_sise": 64}', "unknown setting 'crop_sise'"),
                        ('{"epochs": "many"}', "epochs = 'many' is not a int"),
                        ('[1, 2]', "expected a mapping of settings")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        refused = run_train(["--config", str(bad)])
        assert refused.returncode == 2 and f"--config: {bad}: {named}" in refused.stderr, refused.stderr[-2000:]
