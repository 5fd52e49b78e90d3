"""The LIVE In the Wild Image Quality Challenge release (LIVE-C): the one reader.

`read_release(root)` reads the release's `.mat` files, drops the first 7
entries (the images used to train the raters, `Images/trainingImages/`) and
finds each listed image in `Images/` (file names matched case-insensitively).
Both the TFDS builder (`keras_adtrs.data.tfds.live_challenge`) and the plain
loader here (`load_live_challenge`, used without TensorFlow) read the release
with it, and both give the examples sorted by file name.

Release layout (`ChallengeDB_release/`, or a folder holding it):

```
Images/*.JPG, Images/*.bmp       the 1162 test images
Images/trainingImages/t1.bmp ... t7.bmp
Data/AllImages_release.mat       `AllImages_release` (1169x1 cell of file names)
Data/AllMOS_release.mat          `AllMOS_release` (1x1169 double), MOS in [0, 100]
Data/AllStdDev_release.mat       `AllStdDev_release` (1x1169 double), optional
```
"""

import collections
import os

import numpy as np

from keras_adtrs.data.matlab import loadmat, mat_strings
from keras_adtrs.errors import SettingError
from keras_adtrs.data.source import IQASource

#: Entries of the .mat files that are the raters' training images.
NUM_TRAINING_IMAGES = 7
_MARKER = os.path.join("Data", "AllMOS_release.mat")
_SHOW = 5

#: One image of the release: its file name, path, MOS and rating standard deviation (NaN when absent).
Example = collections.namedtuple("Example", "name path score score_std")


def find_root(manual_dir):
    """The release folder: `manual_dir` itself or its `ChallengeDB_release/` subfolder.

    Raises:
        SettingError: `manual_dir` is None.
        FileNotFoundError: neither holds `Data/AllMOS_release.mat`.
    """
    if manual_dir is None:
        raise SettingError("manual_dir", "is needed by live_challenge: the folder holding ChallengeDB_release")
    manual_dir = os.fspath(manual_dir)
    for candidate in (manual_dir, os.path.join(manual_dir, "ChallengeDB_release")):
        if os.path.exists(os.path.join(candidate, _MARKER)):
            return candidate
    raise FileNotFoundError(
        f"{manual_dir}: no {_MARKER} (expected the ChallengeDB_release folder or its parent)"
    )


def read_release(root):
    """The release's test images (the 7 training entries dropped), in the order of its `.mat` files.

    Args:
        root: str. The release folder (see `find_root`).

    Returns:
        list of `Example`.

    Raises:
        ValueError: the `.mat` files disagree in length or hold only the training entries.
        FileNotFoundError: listed images are missing (the count and the first few are named).
    """
    root = os.fspath(root)
    data = os.path.join(root, "Data")
    (names,) = loadmat(os.path.join(data, "AllImages_release.mat"), "AllImages_release")
    (mos,) = loadmat(os.path.join(data, "AllMOS_release.mat"), "AllMOS_release")
    std_path = os.path.join(data, "AllStdDev_release.mat")
    std = loadmat(std_path, "AllStdDev_release")[0] if os.path.exists(std_path) else np.full(len(mos), np.nan)
    names = mat_strings(names)
    if not len(names) == len(mos) == len(std):
        raise ValueError(
            f"{data}: AllImages_release/AllMOS_release/AllStdDev_release have "
            f"{len(names)}/{len(mos)}/{len(std)} entries"
        )
    if len(names) <= NUM_TRAINING_IMAGES:
        raise ValueError(f"{data}: only {len(names)} entries; the first {NUM_TRAINING_IMAGES} are training images")
    images = os.path.join(root, "Images")
    if not os.path.isdir(images):
        raise FileNotFoundError(f"image folder not found: {images}")
    index = {}
    for entry in sorted(os.listdir(images)):
        if os.path.isfile(os.path.join(images, entry)):
            index.setdefault(entry.lower(), entry)
    keep = range(NUM_TRAINING_IMAGES, len(names))
    missing = [names[i] for i in keep if names[i].lower() not in index]
    if missing:
        raise FileNotFoundError(
            f"{images}: {len(missing)} image(s) listed in AllImages_release.mat are missing, e.g. {missing[:_SHOW]}"
        )
    examples = []
    for i in keep:
        name = index[names[i].lower()]
        examples.append(Example(name, os.path.join(images, name), float(mos[i]), float(std[i])))
    return examples


def load_live_challenge(manual_dir, **kwargs):
    """LIVE-C as an `IQASource` of file paths, sorted by file name, without TensorFlow.

    Args:
        manual_dir: str. `ChallengeDB_release/` or a folder holding it.

    Returns:
        An `IQASource`: each image its own split group, MOS in [0, 100],
        higher is better, `metadata["score_std"]`.
    """
    if kwargs:
        raise TypeError(f"live_challenge: unexpected argument(s) {sorted(kwargs)}")
    examples = sorted(read_release(find_root(manual_dir)), key=lambda e: e.name)
    return IQASource(
        name="live_challenge",
        images=[e.path for e in examples],
        scores=np.asarray([e.score for e in examples], np.float32),
        groups=np.arange(len(examples)),
        names=[e.name for e in examples],
        higher_is_better=True,
        score_range=(0.0, 100.0),
        metadata={"score_name": "MOS", "score_std": np.asarray([e.score_std for e in examples], np.float32)},
    )
