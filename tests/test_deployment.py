"""Deployment beyond TF Serving (issue 18): LiteRT and ONNX artifacts, their runtimes, quality maps.

At crop 64 with a seeded random-weight model whose score head is random, so
that scores differ between inputs. The four artifacts are exported once per
module, by the export command, in a subprocess (the ONNX converter's peak
memory stays out of the test process).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_adtrs
from conftest import REPO, random_crops, random_score_head
from keras_adtrs import export as export_command
from keras_adtrs import predict
from keras_adtrs.data.crops import dense_positions, grid_offsets
from keras_adtrs.inference.quality_map import quality_map, save_quality_map
from keras_adtrs.serving.runtimes import ArtifactError, load_artifact, metadata_path
from keras_adtrs.metrics import srcc
from keras_adtrs.models.folding import folded_for_inference
from keras_adtrs.serving.artifacts import ONNX_OPSET, TOLERANCES, check_combination, file_sha256

pytestmark = pytest.mark.large  # every export format, built once per module

pytest.importorskip("onnxruntime", reason="the onnx extra: pip install -e '.[onnx]' (bash .ci/run installs it)")
pytest.importorskip("tf2onnx", reason="the onnx extra: pip install -e '.[onnx]' (bash .ci/run installs it)")

CROP = 64
#: (file name, quantize) of each artifact the export command writes.
ARTIFACTS = {
    "litert": ("adtrs.tflite", None),
    "litert-float16": ("adtrs-float16.tflite", "float16"),
    "litert-int8": ("adtrs-int8.tflite", "int8"),
    "onnx": ("adtrs.onnx", None),
}
#: What the run folder's config.json says about the labels (the score's meaning comes from it).
DATA_SET = {"name": "live_challenge", "higher_is_better": True, "score_range": [3.42, 92.43]}
RANGE = DATA_SET["score_range"][1] - DATA_SET["score_range"][0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run-like folder with model.keras and config.json, exported in every format."""
    import keras

    root = tmp_path_factory.mktemp("deployment")
    run = root / "run"
    run.mkdir()
    keras.utils.set_random_seed(18)
    model = random_score_head(
        keras_adtrs.build_adtrs(crop_size=CROP, backbone_weights=None, score_scale=10.0, score_offset=50.0), seed=18
    )
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": model.get_config(), "data_set": DATA_SET}))
    exports = root / "exports"
    calls = [
        ["--format", "litert"], ["--format", "litert", "--quantize", "float16"],
        ["--format", "litert", "--quantize", "int8"], ["--format", "onnx"],
    ]
    script = (
        "import sys\nfrom keras_adtrs import export\n"
        f"for extra in {calls!r}:\n"
        f"    status = export.main(['--model', {str(run / 'model.keras')!r}, '--export-dir', {str(exports)!r}, *extra])\n"
        "    assert status == 0, (extra, status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"root": root, "model_path": run / "model.keras", "model": model, "folded": folded_for_inference(model),
            "exports": exports, "stdout": result.stdout}


@pytest.fixture(scope="module")
def images(world):
    """PNG files of different sizes and content (one smaller than a crop), and one broken file."""
    folder = world["root"] / "photos"
    folder.mkdir()
    rng = np.random.default_rng(5)
    sizes = [(90, 120), (100, 100), (72, 80), (40, 56)]
    for k, size in enumerate(sizes):
        base = np.clip(rng.normal(50 + 45 * k, 20 + 15 * k, (*size, 3)), 0, 255)
        Image.fromarray(base.astype(np.uint8)).save(folder / f"p{k}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def _path(world, key):
    return str(world["exports"] / ARTIFACTS[key][0])


def test_unsupported_combinations_are_named(tmp_path, capsys):
    for argv, named in [
        (["--format", "onnx", "--quantize", "int8"], "--quantize int8 is not supported by format onnx"),
        (["--quantize", "float16"], "--quantize float16 is not supported by format savedmodel"),
        (["--format", "litert", "--version", "3"], "--format litert --version is not supported"),
        (["--format", "onnx", "--max-pixels", "10"], "--format onnx --max-pixels is not supported"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            export_command.main(["--model", str(tmp_path / "m.keras"), "--export-dir", str(tmp_path), *argv])
        assert exit_.value.code == 2
        assert named in capsys.readouterr().err
    with pytest.raises(ValueError, match="quantize float16 is not supported by format onnx"):
        check_combination("onnx", "float16")
    from types import SimpleNamespace

    from keras_adtrs.serving.export_litert import export_litert
    from keras_adtrs.serving.export_onnx import export_onnx

    mixed = SimpleNamespace(crop_size=CROP, dtype_policy=SimpleNamespace(name="mixed_bfloat16"))
    for export in (export_litert, export_onnx):
        with pytest.raises(ValueError, match="precision mixed_bfloat16: format .* exports float32 models"):
            export(mixed, str(tmp_path / "m.out"), fold_batchnorm=False)
    assert not os.listdir(tmp_path)


def test_every_format_exports_with_its_metadata(world):
    sha = file_sha256(world["model_path"])
    sizes = {}
    for key, (name, quantize) in ARTIFACTS.items():
        path = world["exports"] / name
        assert path.is_file(), world["stdout"]
        meta = json.loads(open(metadata_path(path)).read())
        assert meta["format"] == key.split("-")[0] and meta["quantization"] == (quantize or "none")
        assert meta["onnx_opset"] == (ONNX_OPSET if key == "onnx" else None)
        assert meta["crop_size"] == CROP and meta["batchnorm_folded"] == 53
        assert meta["input"] == {
            "name": "crops", "dtype": "float32", "shape": [None, CROP, CROP, 3], "layout": "NHWC", "channels": "RGB",
            "range": [0, 255], "note": meta["input"]["note"],
        }
        assert meta["output"]["name"] == "score" and meta["output"]["shape"] == [None]
        assert meta["keras_adtrs_version"] == keras_adtrs.__version__
        assert meta["source_model"] == {"file": "model.keras", "sha256": sha}
        assert meta["sha256"] == file_sha256(path) and meta["bytes"] == path.stat().st_size
        score = meta["score"]
        assert score["higher_is_better"] is True and score["data_set"] == "live_challenge"
        assert "higher is better" in score["meaning"] and score["tolerance_range"] == pytest.approx(RANGE)
        assert meta["tolerance"]["fraction_of_score_range"] == TOLERANCES[quantize]
        sizes[key] = path.stat().st_size
    assert sizes["litert-int8"] < sizes["litert-float16"] < sizes["litert"]
    assert not [p for p in os.listdir(world["exports"]) if p.startswith(".tmp")]


def test_artifacts_match_keras_on_the_same_crops(world):
    crops = np.concatenate([random_crops(6, CROP, seed=1), np.clip(random_crops(6, CROP, seed=2) * 0.3 + 90, 0, 255)])
    expected = np.asarray(world["folded"].predict_on_batch(crops), np.float64)
    assert np.ptp(expected) > 0.1  # the crops get different scores
    for key, (name, quantize) in ARTIFACTS.items():
        artifact = load_artifact(_path(world, key))
        assert artifact.crop_size == CROP and artifact.runtime == key.split("-")[0]
        got = artifact.predict_on_batch(crops)
        assert got.shape == (12,) and got.dtype == np.float32
        difference = np.max(np.abs(got - expected))
        assert difference <= TOLERANCES[quantize] * RANGE, (key, difference)
        if quantize is not None:
            assert srcc(got, expected) >= 0.9, key
        # The batch is free: one crop at a time gives the same scores.
        single = np.concatenate([artifact.predict_on_batch(crops[k : k + 1]) for k in range(3)])
        np.testing.assert_allclose(single, got[:3], atol=1e-4 * RANGE, rtol=0)


def test_score_with_an_artifact_matches_keras_score(world, images):
    paths = sorted(str(p) for p in images.glob("p*.png"))
    expected = keras_adtrs.score(world["folded"], paths, crops=4)
    for key in ("litert", "onnx"):
        got = keras_adtrs.score(load_artifact(_path(world, key)), paths, crops=4, batch_size=8)
        np.testing.assert_allclose(got, expected, atol=1e-4 * RANGE, rtol=0)


def test_corrupt_truncated_and_foreign_artifacts_are_named(world, tmp_path):
    data = {key: open(_path(world, key), "rb").read() for key in ("litert", "onnx")}
    cases = {
        "truncated.tflite": data["litert"][: len(data["litert"]) // 3],
        "truncated.onnx": data["onnx"][: len(data["onnx"]) // 3],
        "garbage.tflite": b"not a flatbuffer at all" * 10,
        "garbage.onnx": b"\x00\x01not a protobuf" * 10,
        "empty.onnx": b"",
        "onnx_inside.tflite": data["onnx"][:200000],
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ArtifactError, match=str(path)):
            load_artifact(path)
    with pytest.raises(ArtifactError, match="no such file"):
        load_artifact(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="cannot tell the runtime"):
        load_artifact(tmp_path / "model.bin")
    # Metadata that contradicts the file.
    copy = tmp_path / "copy.tflite"
    copy.write_bytes(data["litert"])
    open(metadata_path(copy), "w").write(json.dumps({"crop_size": 224}))
    with pytest.raises(ArtifactError, match="says crop 224"):
        load_artifact(copy)


def test_predict_with_a_broken_artifact_names_it(world, images, tmp_path, capsys):
    path = tmp_path / "cut.onnx"
    path.write_bytes(open(_path(world, "onnx"), "rb").read()[:5000])
    assert predict.main([str(images), "--model", str(path), "--no-progress"]) == 2
    assert f"cannot load model {path}" in capsys.readouterr().err


def test_existing_artifact_is_refused_without_overwrite(world, capsys):
    status = export_command.main(
        ["--model", str(world["model_path"]), "--export-dir", str(world["exports"]), "--format", "onnx"]
    )
    assert status == 1 and "adtrs.onnx already exists; pass --overwrite" in capsys.readouterr().err


def test_predict_runtimes_give_the_keras_rows(world, images, capsys):
    def rows(*extra):
        status = predict.main([str(images), "--format", "json", "--crops", "4", "--no-progress", *extra])
        out = capsys.readouterr()
        assert status == 1 and "1 of 5 file(s) could not be scored" in out.err
        return json.loads(out.out)

    keras_rows = rows("--model", str(world["model_path"]), "--precision", "float32")  # as the artifacts
    assert [os.path.basename(r["path"]) for r in keras_rows] == ["broken.png", "p0.png", "p1.png", "p2.png", "p3.png"]
    assert "error" in keras_rows[0] and "broken.png" in keras_rows[0]["error"]
    for key in ("litert", "onnx"):
        for extra in (["--runtime", key.split("-")[0]], []):  # explicit, and from the file name
            got = rows("--model", _path(world, key), *extra)
            assert [set(r) for r in got] == [set(r) for r in keras_rows]
            np.testing.assert_allclose([r["score"] for r in got[1:]], [r["score"] for r in keras_rows[1:]],
                                       atol=1e-4 * RANGE, rtol=0)
    with pytest.raises(SystemExit):
        predict.main([str(images), "--model", _path(world, "onnx"), "--runtime", "keras"])


def test_predict_map_writes_png_and_grid(world, images, tmp_path, capsys):
    out_dir = tmp_path / "maps"
    status = predict.main([str(images / "p0.png"), str(images / "p3.png"), str(images / "broken.png"),
                           "--model", _path(world, "litert-int8"), "--map", str(out_dir), "--stride", "16",
                           "--no-progress", "--crops", "4"])
    assert status == 1  # broken.png: an error row, and no map
    capsys.readouterr()
    assert sorted(os.listdir(out_dir)) == ["p0.npy", "p0.png", "p3.npy", "p3.png"]
    grid = np.load(out_dir / "p0.npy")
    assert grid.shape == (len(dense_positions(90 - CROP, 16)), len(dense_positions(120 - CROP, 16))) == (3, 5)
    expected = quality_map(load_artifact(_path(world, "litert-int8")), str(images / "p0.png"), stride=16)
    np.testing.assert_allclose(grid, expected.scores, atol=1e-6)
    assert np.ptp(grid) > 0  # the crops of the map differ
    with Image.open(out_dir / "p0.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 300
    with pytest.raises(SystemExit):
        predict.main([str(images), "--model", str(world["model_path"]), "--stride", "8"])  # --stride without --map


def test_dense_positions():
    assert dense_positions(0, 16) == [0]
    assert dense_positions(36, 20) == [0, 18, 36]
    assert dense_positions(56, 16) == [0, 14, 28, 42, 56]
    for span in range(0, 200, 7):
        for stride in (1, 5, 16, 64):
            positions = dense_positions(span, stride)
            assert positions[0] == 0 and positions[-1] == span
            assert all(0 < b - a <= stride for a, b in zip(positions, positions[1:]))
    with pytest.raises(ValueError, match="stride"):
        dense_positions(10, 0)


def test_quality_map_mean_over_a_full_grid_is_the_image_score(world):
    model = world["folded"]
    image = np.random.default_rng(9).integers(0, 256, (100, 104, 3), dtype=np.uint8)
    qmap = quality_map(model, image, stride=20, batch_size=4)
    assert qmap.scores.shape == (3, 3)  # spans 36 and 40 at stride 20: 3 x 3 crops
    # The 3 x 3 dense grid is the test grid of 9 crops, so its mean is the image score.
    assert [(t, l) for t in qmap.tops for l in qmap.lefts] == grid_offsets(100, 104, CROP, 9)
    expected = float(keras_adtrs.score(model, [image], crops=9)[0])
    assert qmap.score == pytest.approx(expected, abs=1e-5 * RANGE)
    assert np.ptp(qmap.scores) > 0
    # Per pixel: the mean of the covering crops; weighted by coverage it averages to the image score.
    pixels, coverage = qmap.pixel_map(), qmap.coverage()
    assert pixels.shape == coverage.shape == (100, 104) and coverage.min() >= 1
    assert coverage[0, 0] == 1 and coverage[50, 52] == 9
    assert pixels[0, 0] == pytest.approx(qmap.scores[0, 0], abs=1e-5)
    assert pixels[50, 52] == pytest.approx(qmap.scores.mean(), abs=1e-4)
    assert np.average(pixels, weights=coverage) == pytest.approx(expected, abs=1e-4)
    assert qmap.scores.min() - 1e-4 <= pixels.min() and pixels.max() <= qmap.scores.max() + 1e-4


def test_quality_map_of_a_small_image_and_the_public_name(world, tmp_path):
    # Smaller than a crop: upscaled (shorter side = crop), as keras_adtrs.score does.
    image = np.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    qmap = keras_adtrs.quality_map(world["folded"], image, stride=CROP)
    assert qmap.image.shape == (64, 80, 3) and qmap.scores.shape == (1, 2)
    png, npy = save_quality_map(qmap, str(tmp_path / "small.png"), higher_is_better=None)
    assert os.path.isfile(png) and np.load(npy).shape == (1, 2)
    with pytest.raises(ValueError, match="stride must be an integer from 1 to the crop size 64"):
        quality_map(world["folded"], image, stride=65)


def test_deployment_benchmark_prints_its_table(world, images, tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for name in ("p0.png", "p1.png", "p3.png"):
        (folder / name).write_bytes((images / name).read_bytes())
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "deployment.py"), "--model", str(world["model_path"]),
         "--images", str(folder), "--count", "3", "--repeats", "1", "--artifacts", "litert-int8"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("commit: ") for line in lines) and any(line.startswith("load averages") for line in lines)
    table = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines if line.startswith("| ") and "---" not in line}
    assert sorted(table) == ["artifact", "keras (folded)", "litert int8"]
    cells = [cell.strip() for cell in table["litert int8"]]
    assert float(cells[0]) > 1 and float(cells[1]) > 0 and float(cells[2]) > 0  # size (MB), latencies (ms)
    assert cells[5].endswith(" ok") and 0.5 <= float(cells[6]) <= 1.0  # within tolerance; SRCC


def test_quality_maps_script_writes_maps(world, images, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality_maps_script", REPO / "benchmarks" / "quality_maps.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out_dir = tmp_path / "maps"
    status = script.main(["--model", _path(world, "onnx"), "--output-dir", str(out_dir), "--stride", "32",
                          str(images / "p0.png"), str(images / "p1.png")])
    out = capsys.readouterr().out
    assert status == 0
    assert sorted(os.listdir(out_dir)) == ["p0.npy", "p0.png", "p1.npy", "p1.png"]
    rows = [line for line in out.splitlines() if line.startswith("| p")]
    assert len(rows) == 2 and "UNTRAINED" not in out
