"""Batch scoring on Apache Beam (the DirectRunner): the same scores as `score` and `predict`, every path once,
error rows with predict's reasons, resuming a killed run, the output formats, a SavedModel as the model."""

import csv
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, random_score_head
from keras_adtrs.errors import SettingError
from run_helpers import run_env

pytest.importorskip("apache_beam", reason="the beam extra: pip install -e '.[beam]' (bash .ci/run installs it)")

from keras_adtrs.serving import scoring_beam  # noqa: E402

pytestmark = pytest.mark.large
IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _photo(seed, size=(150, 200)):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[0], 0:size[1]] / 100.0
    base = np.stack([np.sin(3 * x + seed), np.cos(2 * y - seed), x * y / 3], axis=-1)
    return (127 + 90 * base + rng.normal(0, 2 + 4 * (seed % 5), base.shape)).clip(0, 255).astype("uint8")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder of photos in every form the scorers read, broken files beside them, and a model whose scores differ."""
    import keras_adtrs

    root = tmp_path_factory.mktemp("beam")
    good = root / "photos"
    (good / "nested").mkdir(parents=True)
    for k in range(6):
        Image.fromarray(_photo(k)).save(good / f"p{k}.jpg", quality=92)
    Image.fromarray(_photo(10)).convert("L").save(good / "grey.png")
    Image.fromarray(_photo(11)).convert("RGBA").save(good / "alpha.png")
    Image.fromarray((_photo(12)[:, :, 0].astype(np.uint16) * 257)).save(good / "nested" / "deep16.png")
    Image.fromarray(_photo(13, (40, 50))).save(good / "nested" / "tiny.bmp")  # upscaled, as score does
    bad = root / "bad"
    bad.mkdir()
    (bad / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (bad / "empty.png").write_bytes(b"")
    data = (good / "p0.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 5])
    (bad / "notes.txt").write_text("a text file named explicitly")
    keras_adtrs_model = random_score_head(keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None,
                                                                  score_scale=10.0, score_offset=50.0))
    keras_adtrs_model.save(root / "model.keras")
    return root


def _job(world, output, **kwargs):
    # float32, as the scores they are compared with (the default, auto, may pick bfloat16).
    options = dict(patterns=[str(world / "photos")], model=str(world / "model.keras"), output=str(output), crops=4,
                   precision="float32")
    options.update(kwargs)
    return scoring_beam.ScoringJob(**options)


def _by_path(rows, key="score"):
    return {row["path"]: row[key] for row in rows}


def test_beam_scores_equal_score_and_the_predict_command(world, tmp_path):
    import keras_adtrs

    out = tmp_path / "out" / "run"
    result = scoring_beam.run_scoring(_job(world, out), IN_PROCESS, progress=False)
    rows = scoring_beam.read_rows(str(out), "scores")
    assert result["counters"]["images_scored"] == len(rows) == 10
    beam = {k: float(v) for k, v in _by_path(rows).items()}
    paths = sorted(beam)
    model = keras_adtrs.load_model(world / "model.keras")
    direct = keras_adtrs.score(model, paths, crops=4)
    spread = float(np.ptp(direct))
    assert spread > 1e-3  # the model's scores differ across images
    np.testing.assert_allclose([beam[p] for p in paths], direct, atol=1e-5 * spread + 1e-6, rtol=0)
    command = subprocess.run([sys.executable, "-m", "keras_adtrs.predict", *paths, "--model", str(world / "model.keras"),
                              "--crops", "4", "--format", "csv", "--no-progress", "--precision", "float32"],
                             cwd=REPO, env=run_env(),
                             capture_output=True, text=True, timeout=600)
    assert command.returncode == 0, command.stderr[-2000:]
    printed = {r["path"]: float(r["score"]) for r in csv.DictReader(io.StringIO(command.stdout))}
    np.testing.assert_allclose([beam[p] for p in paths], [printed[p] for p in paths], atol=1e-5 * spread + 1e-6, rtol=0)
    assert {row["crops"] for row in rows} == {"4"} and len({row["model"] for row in rows}) == 1
    assert rows[0]["model"].startswith("model.keras@sha256:")


def test_every_path_once_across_scores_and_errors(world, tmp_path):
    """Good and broken files, a missing one, a folder and a file named twice: each path once, in one output."""
    listing = tmp_path / "more.txt"
    listing.write_text(f"# a list of paths\n{world / 'photos' / 'p1.jpg'}\n\n{world / 'bad' / 'notes.txt'}\n")
    inputs = [str(world / "photos"), str(world / "photos" / "p0.jpg"), str(world / "bad"),
              str(world / "bad" / "truncated.jpg"), str(tmp_path / "missing.jpg")]
    out = tmp_path / "out" / "run"
    result = scoring_beam.run_scoring(_job(world, out, patterns=inputs, path_lists=[str(listing)],
                                           output_format="jsonl"), IN_PROCESS, progress=False)
    scores = scoring_beam.read_rows(str(out), "scores")
    errors = scoring_beam.read_rows(str(out), "errors")
    scored, failed = [r["path"] for r in scores], [r["path"] for r in errors]
    everything = scored + failed
    assert len(everything) == len(set(everything)) == 15  # 10 photos, 3 broken in bad/, notes.txt, missing.jpg
    assert not set(scored) & set(failed)
    assert set(failed) == {str(world / "bad" / n) for n in ("corrupt.jpg", "empty.png", "truncated.jpg", "notes.txt")} | {
        str(tmp_path / "missing.jpg")}
    counters = result["counters"]
    assert counters["images_scored"] == 10
    assert counters["failures_missing"] == 1 and counters["failures_empty"] == 1
    assert counters["failures_undecodable"] == 3
    # The reasons are the predict command's, word for word.
    command = subprocess.run([sys.executable, "-m", "keras_adtrs.predict", *failed, "--model",
                              str(world / "model.keras"), "--format", "csv", "--no-progress"], cwd=REPO, env=run_env(),
                             capture_output=True, text=True, timeout=600)
    assert command.returncode == 1
    reasons = {r["path"]: r["error"] for r in csv.DictReader(io.StringIO(command.stdout))}
    assert _by_path(errors, "reason") == reasons


def test_error_rows_and_output_formats(world, tmp_path):
    for fmt in ("csv", "parquet", "jsonl"):
        out = tmp_path / fmt / "run"
        scoring_beam.run_scoring(_job(world, out, patterns=[str(world / "bad" / "empty.png"),
                                                            str(world / "photos" / "p2.jpg")], output_format=fmt),
                                 IN_PROCESS, progress=False)
        shards = scoring_beam.shard_paths(str(out), "errors")
        assert shards and all(s.endswith(scoring_beam.EXTENSIONS[fmt]) for s in shards)
        (error,) = scoring_beam.read_rows(str(out), "errors")
        assert error == {"path": str(world / "bad" / "empty.png"), "kind": "empty",
                         "reason": f"{world / 'bad' / 'empty.png'}: file is empty"}
        (row,) = scoring_beam.read_rows(str(out), "scores")
        assert set(row) == {"path", "score", "crops", "model"} and float(row["score"]) > 0


def test_a_killed_run_resumes_with_skip_scored(world, tmp_path):
    """SIGKILL while shards are being written; `--skip-scored PREFIX` then scores the rest only."""
    photos = tmp_path / "many"
    photos.mkdir()
    for k in range(40):
        os.link(world / "photos" / f"p{k % 6}.jpg", photos / f"copy{k:02d}.jpg")
    out = tmp_path / "out" / "run"
    args = [sys.executable, "-m", "keras_adtrs.predict", "--engine", "beam", str(photos), "--model",
            str(world / "model.keras"), "--crops", "4", "--output", str(out), "--rows-per-shard", "2",
            "--no-progress", *IN_PROCESS]
    process = subprocess.Popen(args, cwd=REPO, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = time.time()
    while len(scoring_beam.shard_paths(str(out), "scores")) < 3:
        assert process.poll() is None, "the run ended before it could be killed: " + process.stdout.read().decode()[-2000:]
        assert time.time() - started < 600, "no shard in time"
        time.sleep(0.1)
    process.kill()
    process.wait()
    first = {r["path"] for r in scoring_beam.read_rows(str(out), "scores")}
    assert 0 < len(first) < 40
    rerun = subprocess.run(args + ["--skip-scored", str(out)], cwd=REPO, env=run_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(first)} already scored" in rerun.stdout and f"scored {40 - len(first)} image(s)" in rerun.stdout
    rows = scoring_beam.read_rows(str(out), "scores")
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.iterdir())  # each path exactly once


def test_a_savedmodel_scores_as_its_keras_model(world, tmp_path):
    import keras_adtrs
    from keras_adtrs.serving.export import export_model

    version = export_model(keras_adtrs.load_model(world / "model.keras"), str(tmp_path / "export"), num_crops=4)
    out = tmp_path / "out" / "run"
    scoring_beam.run_scoring(_job(world, out, model=version, precision=None), IN_PROCESS, progress=False)
    rows = scoring_beam.read_rows(str(out), "scores")
    saved = {k: float(v) for k, v in _by_path(rows).items()}
    paths = sorted(saved)
    direct = keras_adtrs.score(keras_adtrs.load_model(world / "model.keras"), paths, crops=4)
    # The export folds BatchNorm into the convolutions: the same scores up to float rounding.
    np.testing.assert_allclose([saved[p] for p in paths], direct, atol=1e-4 * float(np.ptp(direct)) + 1e-5, rtol=0)
    assert rows[0]["model"].startswith("1@sha256:")


def test_the_command_names_bad_settings(world, tmp_path):
    for argv, named in ((["--engine", "beam", str(world / "photos"), "--model", str(world / "model.keras")],
                         "--engine beam needs --output PREFIX"),
                        ([str(world / "photos"), "--model", str(world / "model.keras"), "--output", "x"],
                         "--output apply to --engine beam only"),
                        (["--engine", "beam", str(world / "photos"), "--model", str(tmp_path), "--output",
                          str(tmp_path / "o")], "neither a .keras file nor a SavedModel folder")):
        result = subprocess.run([sys.executable, "-m", "keras_adtrs.predict", *argv], cwd=REPO, env=run_env(),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 2 and named in result.stderr, result.stderr[-2000:]


@pytest.mark.slow  # the benchmark script at tiny size: bash .ci/run-slow
def test_scale_benchmark_prints_its_table(world, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--images", "12", "--source", str(world / "photos"),
         "--model", str(world / "model.keras"), "--workers", "1", "2", "--output-dir", str(tmp_path)],
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("matmul ceiling") and "12 images" in lines[1]
    table = [line for line in lines if line.startswith("|")][2:]
    assert [row.split("|")[1].strip() for row in table] == ["predict command", "beam, 1 worker", "beam, 2 workers"]
    for row in table:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert float(cells[1]) > 0 and cells[3].endswith("%")
    summary = json.loads((tmp_path / "scale.json").read_text())
    assert [r["images"] for r in summary["rows"]] == [12, 12, 12]


def test_a_keras_model_scores_in_the_scoring_precision_unless_told(world, monkeypatch):
    """The Beam job's default is the predict command's (`SCORING_PRECISION`, auto); a SavedModel keeps its own."""
    from keras_adtrs.defaults import SCORING_PRECISION
    from keras_adtrs.models import precision as precision_module

    assert SCORING_PRECISION == "auto"
    for fast, expected in ((False, "float32"), (True, "mixed_bfloat16")):
        monkeypatch.setattr(precision_module, "precision_support", lambda name, summary=None, fast=fast: (
            fast or name == "float32", "a test machine"))
        handler = scoring_beam.CropModelHandler(str(world / "model.keras"))
        loaded = handler.load_model()
        assert loaded.precision == expected
        assert loaded._constant_weights_forward is not None  # a worker scores with constant weights
    told = scoring_beam.CropModelHandler(str(world / "model.keras"), precision="float32")
    assert told.load_model().precision == "float32"
    with pytest.raises(SettingError, match="precision"):
        _job(world, "out", model=str(world / "export" / "1"), precision="float32").check()
    with pytest.raises(SettingError, match="precision"):
        _job(world, "out", precision="float64").check()
