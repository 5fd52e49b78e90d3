"""`keras_adtrs.inference.evaluation` and `python -m keras_adtrs.evaluate` on a tiny saved model."""

import io
import json

import numpy as np
import pytest
from PIL import Image

import keras_adtrs
from keras_adtrs import evaluate
from keras_adtrs.data.registry import register_source
from keras_adtrs.data.source import IQASource
from keras_adtrs.inference.evaluation import evaluate_model, scatter_plot
from conftest import random_score_head

NUM_IMAGES = 10


def _tiny_source(data_dir=None, manual_dir=None, **kwargs):
    rng = np.random.default_rng(0)
    images = []
    for k in range(NUM_IMAGES):
        buffer = io.BytesIO()
        level = int(20 + 20 * k)
        array = np.clip(rng.normal(level, 30, (48 + 4 * k, 72, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return IQASource(
        name="unit_tiny_eval",
        images=images,
        scores=np.linspace(10, 90, NUM_IMAGES),
        groups=np.arange(NUM_IMAGES) // 2,
        names=[f"img{k}.png" for k in range(NUM_IMAGES)],
    )


register_source("unit_tiny_eval")(_tiny_source)


@pytest.fixture(scope="module")
def model():
    return random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("run")
    model.save(folder / "model.keras")
    return folder


def test_scatter_plot_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 100, 30)
    path = scatter_plot(y / 20 + rng.normal(0, 0.3, 30), y, str(tmp_path / "s.png"), {"srcc": 0.9, "plcc": 0.8})
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    scatter_plot(np.full(5, 1.0), np.arange(5.0), str(tmp_path / "flat.png"))  # constant: no curve, no crash
    assert (tmp_path / "flat.png").stat().st_size > 0


def test_evaluate_model_grid_and_seeded_random(model):
    source = _tiny_source()
    grid = evaluate_model(model, source, indices=[1, 3, 5, 7], crops=2, bootstrap=20)
    assert grid["num_items"] == 4 and grid["names"] == ["img1.png", "img3.png", "img5.png", "img7.png"]
    np.testing.assert_allclose(
        grid["predictions"], keras_adtrs.score(model, [source.images[i] for i in (1, 3, 5, 7)], crops=2), atol=1e-6
    )
    first = evaluate_model(model, source, [0, 2, 4], crops=2, crop_mode="random", seed=3, bootstrap=0)
    again = evaluate_model(model, source, [0, 2, 4], crops=2, crop_mode="random", seed=3, bootstrap=0)
    np.testing.assert_allclose(first["predictions"], again["predictions"], atol=1e-6)
    # An image's random crops depend on its index in the source, not on the subset.
    subset = evaluate_model(model, source, [4], crops=2, crop_mode="random", seed=3, bootstrap=0)
    assert subset["predictions"][0] == pytest.approx(first["predictions"][2], abs=1e-5)
    with pytest.raises(ValueError, match="crop_mode"):
        evaluate_model(model, source, crop_mode="center")


def test_cli_writes_json_and_png(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    status = evaluate.main([
        "--model", str(model_dir / "model.keras"), "--dataset", "unit_tiny_eval", "--split", "all",
        "--crops", "2", "--bootstrap", "20", "--output-dir", str(out_dir), "--no-progress",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert "SRCC" in printed and "PLCC (logistic)" in printed and "evaluation.json" in printed
    result = json.loads((out_dir / "evaluation.json").read_text())
    assert result["num_items"] == NUM_IMAGES and len(result["predictions"]) == NUM_IMAGES
    for name in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
        assert set(result[name]) == {"value", "ci_low", "ci_high"}
    assert (out_dir / "scatter.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_errors(model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(tmp_path / "none.keras"), "--dataset", "unit_tiny_eval"])
    status = evaluate.main(["--model", str(model_dir / "model.keras"), "--dataset", "no_such_set",
                            "--output-dir", str(tmp_path)])
    assert status == 2 and "no_such_set" in capsys.readouterr().err
