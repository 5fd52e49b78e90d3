"""LIVE In the Wild Image Quality Challenge Database (TFDS builder `live_challenge`)."""

import numpy as np
import tensorflow_datasets as tfds

from keras_adtrs.data.live_challenge import find_root, read_release
from keras_adtrs.data.tfds import _common

_DESCRIPTION = """LIVE In the Wild Image Quality Challenge Database (LIVE-C): 1162 photos
with authentic distortions from mobile devices, labelled with MOS on 0..100
(higher is better) and the standard deviation of the ratings. The 7 images used
to train the raters (the first 7 entries of the .mat files,
`Images/trainingImages/`) are left out.
"""

_CITATION = _common.citation(__file__)  # CITATIONS.bib beside this module


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
        return {"train": self._generate_examples(find_root(dl_manager.manual_dir))}

    def _generate_examples(self, root):
        # The one LIVE-C reader (keras_adtrs.data.live_challenge), shared with the plain loader.
        for example in read_release(root):
            yield example.name, {
                "image": _common.read_image_bytes(example.path),
                "score": example.score,
                "score_std": example.score_std,
                "file_name": example.name,
            }
