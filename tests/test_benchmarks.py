"""The throughput benchmark runs and prints its table (timings are never asserted)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import throughput  # noqa: E402  (benchmarks/ is not a package)


def _throughput(modes):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--crop-size", "64", "--batch-sizes", "2",
         "--repeats", "1", "--modes", *modes],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.mark.large
def test_throughput_benchmark_prints_its_table():
    """Two rows at crop 64: the table's header and columns (the slow test below runs every mode)."""
    out = _throughput(["inference", "score"])
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("matmul ceilings (TensorFlow") and lines[2].split()[:3] == ["mode", "batch", "crops/s"]
    rows = [line.split() for line in lines[4:] if line.strip() and not line.startswith(("authors'", "mixed_"))]
    assert [r[0] for r in rows] == ["inference", "score"] and all(float(r[2]) > 0 for r in rows)
    assert all(r[3].endswith("%") and float(r[4]) > 0 and r[5].endswith("%") for r in rows)  # share, cpu/wall, steal


@pytest.mark.slow  # every mode, about two minutes: bash .ci/run-slow
def test_throughput_benchmark_prints_every_row():
    modes = ["inference", "predict", "predict_constant", "score", "predict_files", "evaluate", "savedmodel", "training",
             "keras_resnet50_training",
             "training:mixed_bfloat16", "authors_test"]
    out = _throughput(modes)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("matmul ceilings (TensorFlow") and "bfloat16" in lines[0]
    assert lines[1].startswith("crop 64:") and "1 round(s) x 1 run(s)" in lines[1]
    assert lines[2].split()[:3] == ["mode", "batch", "crops/s"]
    table = [line for line in lines[4:] if line.strip() and not line.startswith(("authors'", "mixed_"))]
    rows = {line.split()[0]: line.split() for line in table}
    # The authors' attention block is built for 224-pixel crops: skipped at 64, with the reason.
    assert "authors' rows skipped: their attention block is built for 224-pixel crops" in out.stdout
    expected = [m for m in modes if m != "authors_test"]
    if "mixed_bfloat16 rows skipped: this machine has CPU" in out.stdout:
        expected.remove("training:mixed_bfloat16")
    assert sorted(rows) == sorted(expected)
    for mode, cells in rows.items():
        # No authors' row to compare with: the ratio cell is empty; a bfloat16 row has its speed over float32's;
        # then the share of the ceiling, the CPU per wall second, the steal share and the peak memory.
        if ":" in mode:
            assert cells[3].endswith("x"), (mode, cells)
            cells = cells[:3] + cells[4:]
        assert cells[1] == "2" and float(cells[2]) > 0 and cells[3].endswith("%"), (mode, cells)
        assert float(cells[4]) > 0 and cells[5].endswith("%") and float(cells[6]) > 0, (mode, cells)


@pytest.mark.slow  # two model builds and freezes, about a minute: bash .ci/run-slow
def test_constant_weights_benchmark_prints_its_table():
    """`benchmarks/constant_weights.py` at crop 64: a row per precision this machine runs, with a break-even."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "constant_weights.py"), "--crop-size", "64", "--batch-size", "2",
         "--rounds", "1", "--calls", "1"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ") and "crops/s" not in line]
    assert rows and rows[0][0].strip() == "float32", out.stdout
    for cells in rows:
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3].strip().endswith("x"), cells
        assert float(cells[6].split()[0]) < 0.05 * float(cells[6].split("spread")[1].strip(" )")), cells


@pytest.mark.slow  # two training models per precision, about two minutes: bash .ci/run-slow
def test_pointwise_gradients_benchmark_prints_its_tables():
    """`benchmarks/pointwise_gradients.py` at crop 64: the per-shape table and a training row per precision."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pointwise_gradients.py"), "--crop-size", "64", "--batch-size", "2",
         "--rounds", "1", "--steps", "1"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ") and " ms " not in line
            and "crops/s" not in line]
    shapes = [cells for cells in rows if len(cells) == 8]
    steps = [cells for cells in rows if len(cells) == 4]
    assert len(shapes) >= 8 and steps and steps[0][0].strip() == "float32", out.stdout
    for cells in shapes:
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and float(cells[7]) < 0.05, cells
    for cells in steps:
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[3].strip().endswith("x"), cells


def _authors_code(folder):
    folder.mkdir()
    for name in ("models.py", "Attention4DD.py", "resnet.py"):
        (folder / name).write_text("")
    return folder


@pytest.mark.parametrize("torch_installed", [True, False])
def test_authors_rows_say_why_they_cannot_run(tmp_path, monkeypatch, torch_installed):
    """Both branches, whatever this machine has installed: torch present or missing, the code present or not."""
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "torch":
            return object() if torch_installed else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    code = _authors_code(tmp_path / "authors")
    reason = throughput.authors_unavailable(str(code))
    if torch_installed:
        assert reason is None
    else:
        assert reason == "torch is not installed (pip install torch, the CPU wheel)"
    (code / "resnet.py").unlink()
    assert throughput.authors_unavailable(str(code)) == (
        f"the authors' code is not in {code} (missing resnet.py; see --authors-dir)")


def test_throughput_modes_name_bad_parts():
    assert throughput.parse_mode("training:mixed_bfloat16") == ("training", "mixed_bfloat16")
    assert throughput.parse_mode("predict") == ("predict", "float32")
    for bad, message in (("fly", "unknown mode 'fly'"), ("predict:fp8", "unknown precision 'fp8'"),
                         ("authors_test:mixed_bfloat16", "authors_test runs in float32 only")):
        with pytest.raises(ValueError, match=message):
            throughput.parse_mode(bad)


LIVE_C_DUMMY = REPO / "keras_adtrs" / "data" / "tfds" / "live_challenge" / "dummy_data"
#: Four scored images: half for test, one for validation, one to train on.
TINY_LIVE_C = "--test-fraction 0.5 --validation-fraction 0.5 --test-crops 1 --crops-per-image 2 --batch-size 2"


def _photos(folder, count=3):
    """A few smooth RGB photographs (JPEG) to pre-train on."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:300, 0:400] / 300.0
    for k in range(count):
        base = np.stack([np.sin(3 * x + k), np.cos(2 * y - k), x * y], axis=-1)
        pixels = (127 + 100 * base + rng.normal(0, 3, base.shape)).clip(0, 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"photo{k}.jpg", quality=95)
    return folder


@pytest.mark.slow  # two commands, each several minutes on 2 cores: bash .ci/run-slow
def test_clive_pipeline_script_runs_both_commands(tmp_path):
    """`benchmarks/clive_pipeline.sh` at tiny size on the LIVE-C dummy release: pretrain, then the recipe with
    --init-from on every image."""
    out = tmp_path / "out"
    env = {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHON": sys.executable, "CLIVE": str(LIVE_C_DUMMY),
        "PHOTOS": str(_photos(tmp_path / "photos")), "PRETRAIN_STEPS": "2",
        "EXTRA_PRETRAIN": "--crop-size 64 --steps-per-epoch 1 --groups 2 --levels 2 --quiet",
        "EXTRA_TRAIN": f"--crop-size 64 --epochs 1 --linear-probe-epochs 1 --test-crops 1 --crops-per-image 2 "
                       f"--batch-size 2 --data-dir {tmp_path / 'tfds'} --quiet",
    }
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "clive_pipeline.sh"), str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.keras").is_file() and (out / "pretrain" / "model.keras").is_file()
    import json

    pipeline = json.loads((out / "pipeline.json").read_text())
    assert pipeline["pretrain_steps"] == 2 and pipeline["total_seconds"] >= 0
    assert pipeline["recipe"].endswith("recipes/clive_probe.yaml")
    pretrain_config = json.loads((out / "pretrain" / "config.json").read_text())
    read = json.dumps(pretrain_config)
    assert "trainingImages" in read and str(tmp_path / "photos") in read  # both sources, no LIVE-C scored image
    train_config = json.loads((out / "train" / "config.json").read_text())
    settings = train_config["settings"]
    assert "init_from" in json.dumps(train_config)
    assert settings["test_fraction"] == 0 and settings["validation_fraction"] == 0
    assert settings["linear_probe_epochs"] == 1 and settings["crop_size"] == 64  # the recipe, flags override it
    # A missing release and a missing recipe are named.
    bad = subprocess.run(["bash", str(REPO / "benchmarks" / "clive_pipeline.sh"), str(tmp_path / "bad")],
                         env={**env, "CLIVE": str(tmp_path / "nowhere")}, capture_output=True, text=True)
    assert bad.returncode == 2 and "no LIVE-C release at" in bad.stderr and str(tmp_path / "nowhere") in bad.stderr
    bad = subprocess.run(["bash", str(REPO / "benchmarks" / "clive_pipeline.sh"), str(tmp_path / "bad")],
                         env={**env, "RECIPE": str(tmp_path / "none.yaml")}, capture_output=True, text=True)
    assert bad.returncode == 2 and "no recipe file at" in bad.stderr


@pytest.mark.slow  # two training runs: bash .ci/run-slow
def test_pretraining_ablation_prints_its_table(tmp_path):
    """`benchmarks/pretraining_ablation.py` at tiny size: two rows, one split each, on the LIVE-C dummy release."""
    import json

    import keras_adtrs

    pretrained = tmp_path / "pretrained.keras"
    keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None).save(pretrained)
    out = tmp_path / "ablation"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pretraining_ablation.py"), "--manual-dir", str(LIVE_C_DUMMY),
         "--init-from", str(pretrained), "--rows", "1", "6", "--splits", "1", "--crop-size", "64", "--epochs", "1",
         "--output-dir", str(out), "--train-args", f"{TINY_LIVE_C} --data-dir {tmp_path / 'tfds'}"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "1 splits" in lines[0] and "crop 64" in lines[0]
    assert lines[1].startswith("| row | initialisation and objective | test SRCC | test PLCC |")
    assert [line.split("|")[1].strip() for line in lines[3:]] == ["1", "6"]
    assert "random init, quality terms only" in lines[3] and "pre-trained, full ADTRS" in lines[4]
    assert (out / "ablation.json").is_file()
    row6 = json.dumps(json.loads((out / "ablation.json").read_text())["rows"][1])
    assert (out / "row6").is_dir()
    row6 += "".join(p.read_text() for p in (out / "row6").rglob("config.json"))
    assert str(pretrained) in row6
    # Rows 3-6 need a pre-trained model.
    refused = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pretraining_ablation.py"), "--rows", "3"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "rows 3-6 need --init-from" in refused.stderr


@pytest.mark.slow  # a K-fold run and both yardsticks, over a minute; test_folds.py covers both: bash .ci/run-slow
def test_clive_recipes_prints_its_table(tmp_path):
    """`benchmarks/clive_recipes.py` at tiny size: one training row (2 folds) and both yardsticks on its folds."""
    import json

    import numpy as np
    from PIL import Image

    from run_helpers import write_live_challenge_release

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:224] / 224.0
    scene = 127 + 90 * np.stack([np.sin(7 * x), np.cos(5 * y), x * y], axis=-1)
    images = [(scene + rng.normal(0, 3 + 5 * k, scene.shape)).clip(0, 255).astype("uint8") for k in range(12)]
    release = write_live_challenge_release(tmp_path, images, [90 - 6 * k for k in range(12)])
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    py, px = np.mgrid[0:576, 0:576] / 576.0
    for k in range(4):
        clean = 127 + 90 * np.stack([np.sin((7 + k) * px + 3 * py), np.cos((5 + k) * py), px * py], axis=-1)
        Image.fromarray((clean + rng.normal(0, 2, clean.shape)).clip(0, 255).astype("uint8")).save(
            pristine / f"clean{k}.png")
    out = tmp_path / "recipes"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "clive_recipes.py"), "--manual-dir", str(release), "--rows",
         "probe", "niqe", "brisque", "--folds", "2", "--pristine", str(pristine), "--output-dir", str(out),
         "--train-args", "--crop-size 64 --epochs 1 --linear-probe-epochs 1 --steps-per-epoch 1 --crops-per-image 1 "
         "--batch-size 2 --test-crops 1 --validation-fraction 0.2"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                          "KERAS_ADTRS_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2-fold pooled out-of-fold metrics on")
    rows = [line.split("|")[1].strip() for line in lines[3:]]
    assert rows == ["probe", "niqe", "brisque"], result.stdout
    table = json.loads((out / "recipes.json").read_text())
    for row in table["rows"]:
        assert "error" not in row, row
        assert row["srcc_ci"][0] <= row["srcc"] <= row["srcc_ci"][1] and row["cpu_minutes"] > 0
    assert (out / "probe" / "folds.json").is_file()


@pytest.mark.slow  # two tiny training runs and the agreement: bash .ci/run-slow
def test_precision_accuracy_prints_both_tables(tmp_path):
    """`benchmarks/precision_accuracy.py` at tiny size: the agreement of a model's float32 and bfloat16 scores on
    the LIVE-C dummy release, and one seed's default run (shortened) per precision."""
    import json

    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "precision_accuracy.py"), "--manual-dir", str(LIVE_C_DUMMY),
         "--seeds", "0", "--output-dir", str(tmp_path / "precision"), "--train-args",
         "--epochs 1 --steps-per-epoch 1 --crop-size 64 --crops-per-image 1 --batch-size 4 --test-crops 1 "
         f"--backbone-weights none --data-dir {tmp_path / 'tfds'}"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                          "KERAS_ADTRS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "precision" / "precision_accuracy.json").read_text())
    assert [(r["precision"], r.get("error")) for r in record["runs"]] == [("float32", None), ("mixed_bfloat16", None)]
    agreement = record["agreement"]
    assert agreement["images"] > 0 and agreement["srcc_bfloat16_float32"] > 0.9, agreement
    assert "agreement on" in result.stdout and "median test SRCC, mixed_bfloat16" in result.stdout
    # --reuse reads the finished runs instead of training again.
    again = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "precision_accuracy.py"), "--manual-dir", str(LIVE_C_DUMMY),
         "--seeds", "0", "--output-dir", str(tmp_path / "precision"), "--reuse", "--train-args", "--no-such-option"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                          "KERAS_ADTRS_OFFLINE": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    reread = json.loads((tmp_path / "precision" / "precision_accuracy.json").read_text())
    assert [r["test_srcc"] for r in reread["runs"]] == [r["test_srcc"] for r in record["runs"]]
