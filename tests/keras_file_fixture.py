"""Rebuilds a `.keras` file saved by an earlier version from `tests/testdata/keras_file_v0_1_0.json`.

A real ResNet50 `.keras` file is about 95 MB, too large for the repository.
The fixture keeps what the file holds apart from the weights' values: its
`config.json` and `metadata.json` as written, and the path, shape and dtype
of every array of its `model.weights.h5`. The values come from a stated
rule (`rule_value`), so the file can be rebuilt byte for byte in any
checkout; the scores that the version which wrote it computed on a stated
input (`fixture_crops`) after loading the rebuilt file are stored too.
`tests/testdata/make_keras_file_fixture.py` made the fixture.
"""

import json
import pathlib
import zipfile
import zlib

import numpy as np

FIXTURE = pathlib.Path(__file__).resolve().parent / "testdata" / "keras_file_v0_1_0.json"


def load_fixture(path=FIXTURE):
    return json.loads(pathlib.Path(path).read_text())


def _is_batchnorm(group):
    """A weights group of four 1-D float arrays of one length: gamma, beta, moving mean, moving variance."""
    shapes = [tuple(d["shape"]) for d in group]
    return len(group) == 4 and all(len(s) == 1 for s in shapes) and len(set(shapes)) == 1


def rule_value(entry, group):
    """The value of one weights array: a seeded draw that depends on its path only.

    Kernels (2-D and more) are He-normal, vectors small; in a BatchNorm
    group the scale and the moving variance lie in [0.5, 1.5].
    """
    shape = tuple(entry["shape"])
    if "value" in entry:  # integer state (seed generators): kept as saved
        return np.asarray(entry["value"], entry["dtype"]).reshape(shape)
    rng = np.random.default_rng(zlib.crc32(entry["path"].encode()))
    index = int(entry["path"].rsplit("/", 1)[1])
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[:-1]))
        value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif _is_batchnorm(group) and index in (0, 3):
        value = rng.uniform(0.5, 1.5, shape)
    else:
        value = rng.normal(0.0, 0.05, shape)
    return value.astype(entry["dtype"])


def weights_by_path(fixture):
    groups = {}
    for entry in fixture["arrays"]:
        groups.setdefault(entry["path"].rsplit("/", 1)[0], []).append(entry)
    return {entry["path"]: rule_value(entry, groups[entry["path"].rsplit("/", 1)[0]]) for entry in fixture["arrays"]}


def write_keras_file(fixture, path):
    """Writes the `.keras` file of `fixture` to `path` (a zip of config.json, metadata.json, model.weights.h5)."""
    import h5py

    path = pathlib.Path(path)
    weights = path.with_suffix(".weights.h5.tmp")
    with h5py.File(weights, "w") as handle:
        for name, value in weights_by_path(fixture).items():
            handle.create_dataset(name, data=value)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(fixture["metadata.json"]))
        archive.writestr("config.json", json.dumps(fixture["config.json"]))
        archive.write(weights, "model.weights.h5")
    weights.unlink()
    return path


def fixture_crops(fixture):
    rule = fixture["crops"]
    return np.random.default_rng(rule["seed"]).uniform(0, 255, tuple(rule["shape"])).astype("float32")
