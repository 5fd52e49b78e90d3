"""LIVE In the Wild Image Quality Challenge Database (TFDS builder `live_challenge`)."""

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.tfds import _common

NUM_TRAINING_IMAGES = 7  # the release's first 7 entries: images used to train the raters

_DESCRIPTION = """LIVE In the Wild Image Quality Challenge Database (LIVE-C): 1162 photos
with authentic distortions from mobile devices, labelled with MOS on 0..100
(higher is better) and the standard deviation of the ratings. The 7 images used
to train the raters (the first 7 entries of the .mat files,
`Images/trainingImages/`) are left out.
"""

_CITATION = """@article{ghadiyaram2016massive,
  title={Massive online crowdsourced study of subjective and objective picture quality},
  author={Ghadiyaram, Deepti and Bovik, Alan C},
  journal={IEEE Transactions on Image Processing}, volume={25}, number={1}, pages={372--387}, year={2016}}
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """LIVE-C (`live_challenge`): 1162 authentically distorted photos, MOS 0..100."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Request the "LIVE In the Wild Image Quality Challenge Database" at
    https://live.ece.utexas.edu/research/ChallengeDB/index.html (the form mails
    a link to ChallengeDB_release.zip), unzip it and pass the folder that holds
    (or whose `ChallengeDB_release/` subfolder holds)
      Images/*.JPG, Images/*.bmp            the 1162 test images
      Images/trainingImages/t1.bmp ... t7.bmp
      Data/AllImages_release.mat   `AllImages_release` (1169x1 cell of file names)
      Data/AllMOS_release.mat      `AllMOS_release` (1x1169 double)
      Data/AllStdDev_release.mat   `AllStdDev_release` (1x1169 double)
    as `manual_dir`. Keep the database's README.txt (copyright notice) with it.
    A subset with .mat files restricted to its images (same variable names)
    builds the same way.
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
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "score"),
            homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(score_name="MOS", score_range=[0.0, 100.0], higher_is_better=True),
        )

    def _split_generators(self, dl_manager):
        root = _common.find_root(dl_manager.manual_dir, "Data/AllMOS_release.mat", ["ChallengeDB_release"])
        return {"train": self._generate_examples(root)}

    def _generate_examples(self, root):
        root = epath.Path(root)
        data = root / "Data"
        (names,) = _common.loadmat(data / "AllImages_release.mat", "AllImages_release")
        (mos,) = _common.loadmat(data / "AllMOS_release.mat", "AllMOS_release")
        (std,) = _common.loadmat(data / "AllStdDev_release.mat", "AllStdDev_release")
        names = _common.mat_strings(names)
        if not len(names) == len(mos) == len(std):
            raise ValueError(
                f"{data}: AllImages_release/AllMOS_release/AllStdDev_release have "
                f"{len(names)}/{len(mos)}/{len(std)} entries"
            )
        if len(names) <= NUM_TRAINING_IMAGES:
            raise ValueError(f"{data}: only {len(names)} entries; the first {NUM_TRAINING_IMAGES} are training images")
        index = _common.case_insensitive_index(root / "Images")
        for name, score, sd in zip(names[NUM_TRAINING_IMAGES:], mos[NUM_TRAINING_IMAGES:], std[NUM_TRAINING_IMAGES:]):
            path = _common.lookup(index, name, root / "Images")
            yield path.name, {
                "image": _common.read_image_bytes(path),
                "score": float(score),
                "score_std": float(sd),
                "file_name": path.name,
            }
