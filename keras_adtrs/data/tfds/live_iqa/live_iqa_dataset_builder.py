"""LIVE Image Quality Assessment Database, release 2 (TFDS builder `live_iqa`)."""

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.tfds import _common

# Order of the 982 entries of dmos_realigned.mat / refnames_all.mat.
_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))

_DESCRIPTION = """LIVE Image Quality Assessment Database, release 2: 779 distorted images
of 29 reference images (JPEG2000, JPEG, white noise, Gaussian blur, fast-fading
Rayleigh channel), labelled with realigned DMOS (lower is better, about 0..100).
The 203 entries flagged as originals (`orgs == 1`) are reference copies and are
left out; the reference images themselves are not stored, `reference` names them.
"""

_CITATION = _common.citation(__file__)  # CITATIONS.bib beside this module


class Builder(tfds.core.GeneratorBasedBuilder):
    """LIVE IQA release 2 (`live_iqa`): 779 distorted images, realigned DMOS."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Request "LIVE Image Quality Assessment Database Release 2" at
    https://live.ece.utexas.edu/research/quality/subjective.htm (the form
    mails a link to databaserelease2.zip), unzip it and pass the folder that
    holds (or whose `databaserelease2/` subfolder holds):
      refimgs/*.bmp                 the 29 reference images
      jp2k/ jpeg/ wn/ gblur/ fastfading/   img1.bmp ... imgN.bmp (+ info.txt)
      dmos_realigned.mat            variables `dmos_new`, `orgs` (and `dmos_std`)
      refnames_all.mat              variable `refnames_all`
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
                    "level": np.float32,
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "score"),
            homepage="https://live.ece.utexas.edu/research/quality/subjective.htm",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(
                score_name="DMOS (realigned)",
                score_range=[0.0, 100.0],
                higher_is_better=False,
                level_meaning="distortion parameter from each folder's info.txt (NaN if absent)",
            ),
        )

    def _split_generators(self, dl_manager):
        root = _common.find_root(dl_manager.manual_dir, "dmos_realigned.mat", ["databaserelease2"])
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        root = epath.Path(root)
        dmos, orgs = _common.loadmat(root / "dmos_realigned.mat", "dmos_new", "orgs")
        try:
            (std,) = _common.loadmat(root / "dmos_realigned.mat", "dmos_std")
        except KeyError:
            std = np.full(dmos.shape, np.nan)
        (refnames,) = _common.loadmat(root / "refnames_all.mat", "refnames_all")
        refnames = _common.mat_strings(refnames)
        total = sum(n for _, n in _FOLDERS)
        if not len(dmos) == len(orgs) == len(refnames) == total:
            raise ValueError(
                f"{root}: expected {total} entries in dmos_new/orgs/refnames_all, got "
                f"{len(dmos)}/{len(orgs)}/{len(refnames)}"
            )
        i = 0
        for folder, count in _FOLDERS:
            levels = _read_info(root / folder / "info.txt")
            for k in range(1, count + 1):
                name = f"img{k}.bmp"
                if not orgs[i]:
                    path = root / folder / name
                    if not path.exists():
                        raise FileNotFoundError(f"LIVE image missing: {path}")
                    key = f"{folder}/{name}"
                    yield key, {
                        "image": _common.read_image_bytes(path),
                        "score": float(dmos[i]),
                        "score_std": float(std[i]),
                        "reference": refnames[i],
                        "distortion": folder,
                        "level": levels.get(name, np.nan),
                        "file_name": key,
                    }
                i += 1


def _read_info(path):
    """`{distorted name: parameter}` from a LIVE `info.txt` (`ref dist param` lines)."""
    path = epath.Path(path)
    if not path.exists():
        return {}
    levels = {}
    for line in path.read_bytes().decode("latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            try:
                levels[parts[1]] = float(parts[2])
            except ValueError:
                pass
    return levels
