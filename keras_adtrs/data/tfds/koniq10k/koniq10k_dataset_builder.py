"""KonIQ-10k in-the-wild image quality database (TFDS builder `koniq10k`)."""

import csv
import io

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.tfds import _common

IMAGE_FOLDERS = ("1024x768", "512x384")
SETS_FILE = "koniq10k_distributions_sets.csv"

_DESCRIPTION = """KonIQ-10k: 10073 in-the-wild photos (from YFCC100M), labelled with MOS
on 1..5 (higher is better), its standard deviation `SD` and `MOS_zscore`
(0..100, the label HyperIQA-style code trains on). `set` holds the official
split (`training` 7058 / `validation` 1000 / `test` 2015) when
koniq10k_distributions_sets.csv (or a `set` column) is present, else "".
Images come from `1024x768/` if present, else `512x384/`.
"""

_CITATION = _common.citation(__file__)  # CITATIONS.bib beside this module


def _read_csv(path):
    path = epath.Path(path)
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    return reader.fieldnames or [], list(reader)


class Builder(tfds.core.GeneratorBasedBuilder):
    """KonIQ-10k (`koniq10k`): 10073 photos, MOS 1..5, official split in `set`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download from https://database.mmsp-kn.de/koniq-10k-database.html:
    koniq10k_1024x768.zip (or koniq10k_512x384.zip) and
    koniq10k_scores_and_distributions.zip, and for the official split
    koniq10k_distributions_sets.csv. Unzip them into one folder (or its
    `koniq10k/` subfolder) so that it holds
      1024x768/<image_name>.jpg   (or 512x384/)
      koniq10k_scores_and_distributions.csv   columns image_name, MOS, SD, MOS_zscore, ...
      koniq10k_distributions_sets.csv         optional: columns image_name, ..., set
    and pass it as `manual_dir`.
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
                    "mos_zscore": np.float32,
                    "set": tfds.features.Text(),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "score"),
            homepage="https://database.mmsp-kn.de/koniq-10k-database.html",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(
                score_name="MOS",
                score_range=[1.0, 5.0],
                higher_is_better=True,
                official_split_sizes={"training": 7058, "validation": 1000, "test": 2015},
            ),
        )

    def _split_generators(self, dl_manager):
        root = _common.find_root(
            dl_manager.manual_dir, "koniq10k_scores_and_distributions.csv", ["koniq10k", "koniq"]
        )
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        root = epath.Path(root)
        labels = root / "koniq10k_scores_and_distributions.csv"
        fields, rows = _read_csv(labels)
        missing = {"image_name", "MOS"} - set(fields)
        if missing:
            raise ValueError(f"{labels}: missing column(s) {sorted(missing)} (found {fields})")
        sets = {}
        if (root / SETS_FILE).exists():
            set_fields, set_rows = _read_csv(root / SETS_FILE)
            if "set" in set_fields and "image_name" in set_fields:
                sets = {r["image_name"].strip(): r["set"].strip() for r in set_rows}
        folder = next((root / f for f in IMAGE_FOLDERS if (root / f).is_dir()), None)
        if folder is None:
            raise FileNotFoundError(f"KonIQ-10k images not found: none of {IMAGE_FOLDERS} is a folder in {root}")
        index = _common.case_insensitive_index(folder)
        for n, row in enumerate(rows, start=2):
            name = row["image_name"].strip()
            path = _common.lookup(index, name, folder)
            yield path.name, {
                "image": _common.read_image_bytes(path),
                "score": _common.to_float(row["MOS"], f"{labels} line {n} MOS"),
                "score_std": float(row["SD"]) if row.get("SD") else np.nan,
                "mos_zscore": float(row["MOS_zscore"]) if row.get("MOS_zscore") else np.nan,
                "set": (row.get("set") or sets.get(name, "")).strip(),
                "file_name": path.name,
            }
