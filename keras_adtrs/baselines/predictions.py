"""Classical yardsticks on the parts of a data set: what `evaluate --baseline` and the K-fold comparison print.

`SourceFeatures(source)` computes each image's BRISQUE features and NIQE
score once (an image scored by several folds is read once), and gives:

- `niqe(indices, model)`: NIQE of those images, oriented like the data
  set's labels (NIQE is lower for better images: it is negated on sets
  whose higher scores are better, so that every correlation reads the same
  way as the deep model's);
- `brisque(train, test)`: a `BRISQUERegressor` fitted on the `train`
  images' features and human scores, predicting the `test` images.

Example:
>>> features = SourceFeatures(source)  # doctest: +SKIP
>>> features.brisque(split.train, split.test)  # doctest: +SKIP
"""

import sys

import numpy as np

from keras_adtrs.baselines.brisque import BRISQUERegressor, brisque_features
from keras_adtrs.baselines.niqe import NIQEModel
from keras_adtrs.errors import DataSetError

#: The yardsticks `evaluate --baseline` knows.
BASELINES = ("niqe", "brisque")


class SourceFeatures:
    """Per-image BRISQUE features and NIQE scores of an `IQASource`, each computed once.

    Args:
        source: an `IQASource`.
        progress: bool. One line per 50 images on stderr while features
            are computed. Defaults to `False`.
    """

    def __init__(self, source, progress=False):
        self.source = source
        self.progress = progress
        self._brisque = {}
        self._niqe = {}

    def _say(self, done, total, what):
        if self.progress and (done % 50 == 0 or done == total):
            print(f"{what}: {done}/{total} images", file=sys.stderr)

    def brisque_features(self, indices):
        """`(len(indices), 36)` BRISQUE features."""
        missing = [int(i) for i in indices if int(i) not in self._brisque]
        for done, i in enumerate(missing, start=1):
            self._brisque[i] = brisque_features(self.source.images[i], index=i)
            self._say(done, len(missing), "BRISQUE features")
        return np.stack([self._brisque[int(i)] for i in indices])

    def brisque(self, train, test, seed=0):
        """Scores of the `test` images by a BRISQUE regressor fitted on the `train` images' labels.

        The regressor picks its kernel width and ridge by an inner 5-fold split of `train`;
        with fewer than 10 training images, by as many folds as give 2 images each.

        Raises:
            DataSetError: fewer than 4 training images.
        """
        if len(train) < 4:
            raise DataSetError(f"BRISQUE needs at least 4 training images with scores, got {len(train)}")
        folds = min(5, len(train) // 2)
        regressor = BRISQUERegressor(folds=folds, seed=seed).fit(self.brisque_features(train),
                                                    np.asarray(self.source.scores)[np.asarray(train)])
        return regressor.predict(self.brisque_features(test))

    def niqe(self, indices, model):
        """NIQE of the images, negated when the data set's higher scores are better.

        Args:
            indices: array of int. Images of the source.
            model: a `NIQEModel` (fitted on pristine images).
        """
        missing = [int(i) for i in indices if int(i) not in self._niqe]
        for done, i in enumerate(missing, start=1):
            self._niqe[i] = model.score(self.source.images[i], index=i)
            self._say(done, len(missing), "NIQE")
        values = np.array([self._niqe[int(i)] for i in indices], np.float64)
        return -values if self.source.higher_is_better else values


def niqe_model(model_path=None, pristine=None, progress=False):
    """The NIQE pristine model: loaded from `model_path`, else fitted on the images under `pristine`.

    Args:
        model_path: str or None. A model saved by `NIQEModel.save` (`.npz`
            or `.json`).
        pristine: list of str or None. Folders or files of undistorted
            photographs (no human score needed).

    Raises:
        SettingError: neither is given.
    """
    from keras_adtrs.data.images import expand_paths
    from keras_adtrs.errors import SettingError

    if model_path:
        return NIQEModel.load(model_path)
    if not pristine:
        raise SettingError("niqe_model", "or pristine images are needed by the NIQE baseline: a model saved by "
                           "NIQEModel.save, or folders of undistorted photographs to fit one on")
    paths = expand_paths(pristine)
    if progress:
        print(f"fitting the NIQE pristine model on {len(paths)} images", file=sys.stderr)
    return NIQEModel.fit(paths)
