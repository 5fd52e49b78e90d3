"""CSIQ image quality database (TFDS builder `csiq`)."""

import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.tfds import _common

_DESCRIPTION = """CSIQ (Categorical Subjective Image Quality): 866 distorted images of 30
reference images (additive white noise, JPEG, JPEG2000, additive pink noise,
Gaussian blur, global contrast decrement; 4-5 levels each), labelled with DMOS
in 0..1 (lower is better). The reference images are not stored; `reference`
names them.
"""

_CITATION = _common.citation(__file__)  # CITATIONS.bib beside this module

# DMOS-sheet `dst_type` -> token used in the release's file names (lower case).
_TYPE_TOKENS = {
    "noise": "awgn",
    "awgn": "awgn",
    "jpeg": "jpeg",
    "jpeg 2000": "jpeg2000",
    "jpeg2000": "jpeg2000",
    "f noise": "fnoise",
    "fnoise": "fnoise",
    "blur": "blur",
    "contrast": "contrast",
}


class Builder(tfds.core.GeneratorBasedBuilder):
    """CSIQ (`csiq`): 866 distorted images, DMOS 0..1."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the CSIQ database from https://s2.smu.edu/~eclarson/csiq.html
    (mirrored at https://qualinet.github.io/databases/image/categorical_image_quality_csiq_database/):
    unzip it and pass the folder that holds (or whose `CSIQ/` subfolder holds)
      src_imgs/<ref>.png                        the 30 reference images
      dst_imgs/<type>/<ref>.<TYPE>.<level>.png  e.g. dst_imgs/awgn/1600.AWGN.1.png
    and ONE label file:
      csiq.DMOS.xlsx   the release's sheet (sheet `all_by_image`, columns
                       image, dst_idx, dst_type, dst_lev, dmos_std, dmos), or
      csiq_label.txt   a text list, one `<distorted file name> <dmos>` per line
                       (the format used by HyperIQA/TReS code)
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
            homepage="https://s2.smu.edu/~eclarson/csiq.html",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(
                score_name="DMOS",
                score_range=[0.0, 1.0],
                higher_is_better=False,
                score_std_note="dmos_std from csiq.DMOS.xlsx; NaN when labels come from a text list",
            ),
        )

    def _split_generators(self, dl_manager):
        root = _common.find_root(dl_manager.manual_dir, "dst_imgs", ["CSIQ", "csiq"])
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        root = epath.Path(root)
        dst_index = _common.case_insensitive_index(root / "dst_imgs", recursive=True)
        src_index = _common.case_insensitive_index(root / "src_imgs") if (root / "src_imgs").is_dir() else {}
        for ref, token, level, dmos, std in read_labels(root):
            name = f"{ref}.{token}.{level}.png"
            path = _common.lookup(dst_index, name, root / "dst_imgs")
            ref_name = src_index.get(f"{ref}.png".lower(), epath.Path(f"{ref}.png")).name
            yield path.name, {
                "image": _common.read_image_bytes(path),
                "score": dmos,
                "score_std": std,
                "reference": ref_name,
                "distortion": token,
                "level": level,
                "file_name": path.name,
            }


def _normalize_ref(value):
    value = str(value).strip()
    if re.fullmatch(r"\d+\.0+", value):
        value = value.split(".")[0]
    return value


def read_labels(root):
    """`(ref, type token, level, dmos, dmos_std)` tuples from the release's label file."""
    root = epath.Path(root)
    xlsx = root / "csiq.DMOS.xlsx"
    txt = root / "csiq_label.txt"
    out = []
    if xlsx.exists():
        rows = _common.read_xlsx(xlsx, sheet="all_by_image")
        header_at = next(
            (i for i, r in enumerate(rows) if {"image", "dst_type", "dst_lev", "dmos"} <= {c.strip().lower() for c in r}),
            None,
        )
        if header_at is None:
            raise ValueError(f"{xlsx}: no header row with image, dst_type, dst_lev, dmos")
        header = [c.strip().lower() for c in rows[header_at]]
        col = {name: header.index(name) for name in header if name}
        for n, row in enumerate(rows[header_at + 1 :], start=header_at + 2):
            row = row + [""] * (len(header) - len(row))
            if not str(row[col["image"]]).strip():
                continue
            dst_type = row[col["dst_type"]].strip().lower()
            if dst_type not in _TYPE_TOKENS:
                raise ValueError(f"{xlsx} row {n}: unknown dst_type {dst_type!r}")
            level = int(_common.to_float(row[col["dst_lev"]], f"{xlsx} row {n} dst_lev"))
            dmos = _common.to_float(row[col["dmos"]], f"{xlsx} row {n} dmos")
            std = float(row[col["dmos_std"]]) if "dmos_std" in col and row[col["dmos_std"]].strip() else np.nan
            out.append((_normalize_ref(row[col["image"]]), _TYPE_TOKENS[dst_type], level, dmos, std))
    elif txt.exists():
        for n, line in enumerate(txt.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{txt} line {n}: expected `<file name> <dmos>`, got {line!r}")
            stem = re.sub(r"\.png$", "", parts[0], flags=re.IGNORECASE)
            pieces = stem.split(".")
            if len(pieces) < 3:
                raise ValueError(f"{txt} line {n}: file name {parts[0]!r} is not <ref>.<TYPE>.<level>.png")
            ref, token, level = ".".join(pieces[:-2]), pieces[-2].lower(), pieces[-1]
            level = int(_common.to_float(level, f"{txt} line {n} level"))
            out.append((ref, token, level, _common.to_float(parts[1], f"{txt} line {n} dmos"), np.nan))
    else:
        raise FileNotFoundError(f"CSIQ labels not found: neither {xlsx} nor {txt} exists")
    if not out:
        raise ValueError(f"CSIQ labels in {root} list no images")
    return out
