"""Classical no-reference image quality yardsticks: BRISQUE and NIQE (numpy, scipy, Pillow).

Baselines to compare a learned model with, written again from the LIVE MATLAB
releases; this package imports neither Keras nor TensorFlow.

- `nss`: the shared natural-scene statistics: MATLAB `rgb2gray`, MSCN
  coefficients, the GGD and AGGD moment-matching fits, the neighbour
  products, MATLAB's bicubic `imresize` (`imresize_bicubic`);
- `brisque`: `brisque_features(image)` (36 numbers) and `BRISQUERegressor`
  (feature scaling and RBF kernel ridge regression, replacing the original
  epsilon-SVR; tuned by an inner K-fold; saved as JSON);
- `niqe`: `niqe_patch_features(image)` and `NIQEModel` (fit on pristine
  images without human scores, or read MATLAB's `modelparameters.mat`;
  `score(image)`, lower is better; saved as `.npz` or JSON).

Images are paths, encoded bytes or arrays, decoded by
`keras_adtrs.data.images.load_image` (grayscale, alpha and 16-bit input
normalised there); arithmetic is float64. Errors: `ImageReadError`
(unreadable input), `ImageTooSmallError` and `TooFewPatchesError` (both
`ValueError`), each naming the image or the counts.

Example:
>>> from keras_adtrs.baselines import NIQEModel, brisque_features  # doctest: +SKIP
>>> model = NIQEModel.fit(pristine_paths)  # doctest: +SKIP
>>> model.score("photo.jpg"), brisque_features("photo.jpg").shape  # doctest: +SKIP
(4.2, (36,))
"""

from keras_adtrs.baselines.brisque import (
    BRISQUERegressor,
    NotFittedError,
    brisque_features,
    brisque_features_of_gray,
)
from keras_adtrs.baselines.niqe import NIQEModel, TooFewPatchesError, gray_patch_features, niqe_patch_features
from keras_adtrs.baselines.nss import ImageTooSmallError, imresize_bicubic, mscn, read_gray, rgb2gray

__all__ = [
    "BRISQUERegressor",
    "ImageTooSmallError",
    "NIQEModel",
    "NotFittedError",
    "TooFewPatchesError",
    "brisque_features",
    "brisque_features_of_gray",
    "gray_patch_features",
    "imresize_bicubic",
    "mscn",
    "niqe_patch_features",
    "read_gray",
    "rgb2gray",
]
