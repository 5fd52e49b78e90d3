"""Makes `keras_file_v0_1_0.json`: a `.keras` file as keras_adtrs 0.1.0 (commit 02e8315) saved it.

Run it with that version's package on the path, from the repository root:

    git worktree add /tmp/v010 02e8315
    PYTHONPATH=/tmp/v010 python tests/testdata/make_keras_file_fixture.py

It saves a crop-64 model (random initialisation, score scale 10 and
offset 50) with that version, keeps the file's config.json, metadata.json
and the path, shape and dtype of every weights array, rebuilds the file with
the rule of `tests/keras_file_fixture.py`, loads the rebuilt file with that
version and stores its scores of the stated crops.
"""

import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(1, str(HERE.parent))

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_adtrs  # noqa: E402
from keras_file_fixture import fixture_crops, write_keras_file  # noqa: E402


def main():
    work = pathlib.Path(tempfile.mkdtemp())
    model = keras_adtrs.build_adtrs(crop_size=64, backbone_weights=None, score_scale=10.0, score_offset=50.0)
    model.save(work / "saved.keras")
    with zipfile.ZipFile(work / "saved.keras") as archive:
        config = json.loads(archive.read("config.json"))
        metadata = json.loads(archive.read("metadata.json"))
        h5 = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    arrays = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            entry = {"path": name, "shape": list(obj.shape), "dtype": str(obj.dtype)}
            if not np.issubdtype(obj.dtype, np.floating):
                entry["value"] = np.asarray(obj).reshape(-1).tolist()
            arrays.append(entry)

    h5.visititems(visit)
    commit = subprocess.run(["git", "-C", os.path.dirname(keras_adtrs.__file__), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    fixture = {
        "description": "A .keras file saved by keras_adtrs " + keras_adtrs.__version__ + f" (commit {commit}): "
        "its config.json and metadata.json as written, the path/shape/dtype of every array of its "
        "model.weights.h5 (values: tests/keras_file_fixture.py's rule), and the scores that version computed "
        "on the stated crops after loading the file rebuilt with that rule.",
        "made_by": "tests/testdata/make_keras_file_fixture.py",
        "keras_adtrs": keras_adtrs.__version__,
        "commit": commit,
        "keras": keras.__version__,
        "config.json": config,
        "metadata.json": metadata,
        "arrays": arrays,
        "crops": {"rule": "numpy.random.default_rng(seed).uniform(0, 255, shape).astype('float32')",
                  "seed": 1234, "shape": [4, 64, 64, 3]},
    }
    rebuilt = write_keras_file(fixture, work / "rebuilt.keras")
    loaded = keras_adtrs.load_model(rebuilt)
    scores = np.asarray(loaded.predict(fixture_crops(fixture), verbose=0), np.float64)
    fixture["scores"] = scores.tolist()
    out = HERE / "keras_file_v0_1_0.json"
    out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {out}: {len(arrays)} arrays, scores {scores}")


if __name__ == "__main__":
    main()
