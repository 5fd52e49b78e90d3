"""KADID-10k image quality database (TFDS builder `kadid10k`)."""

import csv
import io
import math
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.tfds import _common

DISTORTIONS = (
    "gaussian blur",
    "lens blur",
    "motion blur",
    "color diffusion",
    "color shift",
    "color quantization",
    "color saturation 1",
    "color saturation 2",
    "jpeg2000",
    "jpeg",
    "white noise",
    "white noise in color component",
    "impulse noise",
    "multiplicative noise",
    "denoise",
    "brighten",
    "darken",
    "mean shift",
    "jitter",
    "non-eccentricity patch",
    "pixelate",
    "quantization",
    "color block",
    "high sharpen",
    "contrast change",
)

_DESCRIPTION = """KADID-10k: 10125 distorted images of 81 reference images (25 distortion
types x 5 levels), labelled with DMOS on a 1..5 scale where, unlike most DMOS,
higher is better. `score_std` is the square root of the release's `var`.
`distortion` is "NN name", `level` 1..5. The reference images are not stored;
`reference` names them.
"""

_CITATION = _common.citation(__file__)  # CITATIONS.bib beside this module

_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.png$", re.IGNORECASE)


class Builder(tfds.core.GeneratorBasedBuilder):
    """KADID-10k (`kadid10k`): 10125 distorted images, DMOS 1..5 (higher better)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download kadid10k.zip from https://database.mmsp-kn.de/kadid-10k-database.html,
    unzip it and pass the folder that holds (or whose `kadid10k/` subfolder holds)
      images/Ixx_yy_zz.png   distorted images (and the references Ixx.png)
      dmos.csv               columns dist_img, ref_img, dmos, var
    as `manual_dir`.
    """

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": _common.image_feature(),
                    "score": np.float32,
                    "score_std": np.float32,
                    "reference": tfds.features.Text(),
                    "distortion": tfds.features.Text(),
                    "level": np.int32,
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "score"),
            homepage="https://database.mmsp-kn.de/kadid-10k-database.html",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(score_name="DMOS", score_range=[1.0, 5.0], higher_is_better=True),
        )

    def _split_generators(self, dl_manager):
        root = _common.find_root(dl_manager.manual_dir, "dmos.csv", ["kadid10k", "KADID-10k"])
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        root = epath.Path(root)
        labels = root / "dmos.csv"
        reader = csv.DictReader(io.StringIO(labels.read_text()))
        missing = {"dist_img", "ref_img", "dmos"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{labels}: missing column(s) {sorted(missing)} (found {reader.fieldnames})")
        index = _common.case_insensitive_index(root / "images")
        for n, row in enumerate(reader, start=2):
            name = row["dist_img"].strip()
            match = _NAME.match(name)
            if not match:
                raise ValueError(f"{labels} line {n}: dist_img {name!r} is not Ixx_yy_zz.png")
            _, dist, level = (int(g) for g in match.groups())
            var = row.get("var")
            std = math.sqrt(float(var)) if var not in (None, "") else np.nan
            path = _common.lookup(index, name, root / "images")
            yield path.name, {
                "image": _common.read_image_bytes(path),
                "score": _common.to_float(row["dmos"], f"{labels} line {n} dmos"),
                "score_std": std,
                "reference": row["ref_img"].strip(),
                "distortion": f"{dist:02d} {DISTORTIONS[dist - 1] if 1 <= dist <= 25 else 'unknown'}",
                "level": level,
                "file_name": path.name,
            }
