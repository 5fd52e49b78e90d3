"""TID2013 image quality database (TFDS builder `tid2013`)."""

import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.tfds import _common

DISTORTIONS = (
    "additive gaussian noise",
    "additive noise in color components",
    "spatially correlated noise",
    "masked noise",
    "high frequency noise",
    "impulse noise",
    "quantization noise",
    "gaussian blur",
    "image denoising",
    "jpeg compression",
    "jpeg2000 compression",
    "jpeg transmission errors",
    "jpeg2000 transmission errors",
    "non eccentricity pattern noise",
    "local block-wise distortions",
    "mean shift",
    "contrast change",
    "change of color saturation",
    "multiplicative gaussian noise",
    "comfort noise",
    "lossy compression of noisy images",
    "color quantization with dither",
    "chromatic aberrations",
    "sparse sampling and reconstruction",
)

_DESCRIPTION = """TID2013: 3000 distorted images of 25 reference images (24 distortion
types x 5 levels), labelled with MOS on a 0..9 scale (higher is better).
`distortion` is "NN name" (NN the type number of the file name), `level` 1..5.
The reference images are not stored; `reference` names them.
"""

_CITATION = _common.citation(__file__)  # CITATIONS.bib beside this module

_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.bmp$", re.IGNORECASE)


class Builder(tfds.core.GeneratorBasedBuilder):
    """TID2013 (`tid2013`): 3000 distorted images, MOS 0..9."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download tid2013.rar from https://www.ponomarenko.info/tid2013.htm,
    extract it and pass the folder that holds (or whose `tid2013/` subfolder holds)
      reference_images/I01.BMP ... I25.BMP
      distorted_images/iXX_YY_Z.bmp   (XX reference, YY distortion 01-24, Z level 1-5)
      mos_with_names.txt              `<mos> <file name>` per line
      mos_std.txt                     optional, one std per line, same order
    as `manual_dir`. File names are matched case-insensitively.
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
            homepage="https://www.ponomarenko.info/tid2013.htm",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(
                score_name="MOS",
                score_range=[0.0, 9.0],
                higher_is_better=True,
                score_std_note="from mos_std.txt; NaN if that file is absent",
            ),
        )

    def _split_generators(self, dl_manager):
        root = _common.find_root(dl_manager.manual_dir, "mos_with_names.txt", ["tid2013", "TID2013"])
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        root = epath.Path(root)
        labels = root / "mos_with_names.txt"
        rows = []
        for n, line in enumerate(labels.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{labels} line {n}: expected `<mos> <file name>`, got {line!r}")
            rows.append((n, _common.to_float(parts[0], f"{labels} line {n} mos"), parts[1]))
        stds = [np.nan] * len(rows)
        std_file = root / "mos_std.txt"
        if std_file.exists():
            values = [float(v) for v in std_file.read_text().split()]
            if len(values) != len(rows):
                raise ValueError(f"{std_file}: {len(values)} values but {labels} lists {len(rows)} images")
            stds = values
        dst_index = _common.case_insensitive_index(root / "distorted_images")
        ref_dir = root / "reference_images"
        ref_index = _common.case_insensitive_index(ref_dir) if ref_dir.is_dir() else {}
        for (n, mos, name), std in zip(rows, stds):
            match = _NAME.match(name)
            if not match:
                raise ValueError(f"{labels} line {n}: file name {name!r} is not iXX_YY_Z.bmp")
            ref, dist, level = (int(g) for g in match.groups())
            path = _common.lookup(dst_index, name, root / "distorted_images")
            ref_name = ref_index.get(f"i{ref:02d}.bmp", epath.Path(f"I{ref:02d}.BMP")).name
            dist_name = DISTORTIONS[dist - 1] if 1 <= dist <= len(DISTORTIONS) else "unknown"
            yield path.name, {
                "image": _common.read_image_bytes(path),
                "score": mos,
                "score_std": std,
                "reference": ref_name,
                "distortion": f"{dist:02d} {dist_name}",
                "level": level,
                "file_name": path.name,
            }
