"""`IQASource` loaders for the TFDS-built IQA sets (`live_iqa`, `csiq`, ...).

Each loader builds the TFDS data set once (from the release in `manual_dir`,
cached under `data_dir`) and then reads it back:

- `images`: the stored encoded bytes (JPEG, PNG or BMP as in the release;
  decodable by `keras_adtrs.data.crops_tensorflow.decode_image`),
- `scores`: the set's own MOS/DMOS,
- `groups`: the reference image id for synthetic sets (LIVE, CSIQ, TID2013,
  KADID-10k), the image index for authentic ones (LIVE-C, KonIQ-10k),
- `names`: file names (the TFDS example keys), sorted,
- `metadata`: per-image lists `score_std`, and `reference`, `distortion`,
  `level` (synthetic sets) or `set` (KonIQ-10k official split), plus
  `score_name`.

Example:

```python
from keras_adtrs.data.registry import load_source

source = load_source(
    "live_challenge",
    data_dir="~/tensorflow_datasets",
    manual_dir="/data/ChallengeDB_release",
)
print(len(source), source.score_range, source.higher_is_better)
```

A prepared set records which release it was built from
(`keras_adtrs_release.json` beside TFDS's own files: the release folder's
absolute path and a fingerprint of its file list, relative paths and sizes).
Loading it again with a `manual_dir` that differs stops with an error naming
both folders, instead of silently returning the other release's images;
`manual_dir=None` uses the prepared set as it is.
"""

import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from keras_adtrs.data.source import IQASource
from keras_adtrs.data.splits import Split
from keras_adtrs.errors import DataSetError

SYNTHETIC = ("live_iqa", "csiq", "tid2013", "kadid10k")
AUTHENTIC = ("live_challenge", "koniq10k")
_PER_IMAGE = ("score_std", "reference", "distortion", "level", "set", "mos_zscore")
#: File beside a prepared set's TFDS files naming the release it was built from.
RELEASE_RECORD = "keras_adtrs_release.json"


class ReleaseMismatchError(DataSetError):
    """A prepared data set was built from another release folder than the `manual_dir` given."""


def release_fingerprint(manual_dir):
    """What identifies a release folder: its absolute path and its file list.

    Args:
        manual_dir: str or path. The release folder.

    Returns:
        dict: `manual_dir` (absolute path), `files` (count) and
        `file_list_sha256` (SHA-256 over every file's relative path and size,
        in sorted order; contents are not read).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
    digest = hashlib.sha256()
    count = 0
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            digest.update(f"{relative}\t{os.path.getsize(path)}\n".encode("utf-8"))
            count += 1
    return {"manual_dir": root, "files": count, "file_list_sha256": digest.hexdigest()}


def _check_release(name, builder, manual_dir):
    """Raises `ReleaseMismatchError` unless the prepared set was built from `manual_dir` as it is now."""
    path = os.path.join(builder.data_dir, RELEASE_RECORD)
    wanted = release_fingerprint(manual_dir)
    how = (
        f"To build {name!r} from {wanted['manual_dir']}, pass another data_dir or delete "
        f"{builder.data_dir}; to use the prepared set, leave out manual_dir."
    )
    if not os.path.isfile(path):
        raise ReleaseMismatchError(
            f"data set {name!r} in {builder.data_dir} was prepared without a record of the release it was built "
            f"from, so it cannot be checked against manual_dir {wanted['manual_dir']}. {how}"
        )
    with open(path, encoding="utf-8") as handle:
        built = json.load(handle)
    if built.get("manual_dir") == wanted["manual_dir"] and built.get("file_list_sha256") == wanted["file_list_sha256"]:
        return
    if built.get("manual_dir") == wanted["manual_dir"]:
        change = f"the files in {wanted['manual_dir']} changed since ({built.get('files')} then, {wanted['files']} now)"
    else:
        change = f"manual_dir is {wanted['manual_dir']} ({wanted['files']} files)"
    raise ReleaseMismatchError(
        f"data set {name!r} in {builder.data_dir} was prepared from {built.get('manual_dir')} "
        f"({built.get('files')} files), but {change}. {how}"
    )


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def prepare_builder(name, data_dir=None, manual_dir=None):
    """The TFDS builder `name`, built from `manual_dir` into `data_dir` if not built yet.

    Args:
        name: str. A builder registered by `keras_adtrs.data.tfds`.
        data_dir: str. TFDS data folder (cache). Defaults to TFDS's default.
        manual_dir: str. Folder with the release (see the builder's
            `MANUAL_DOWNLOAD_INSTRUCTIONS`); needed for the first build. When
            the set is already prepared it must be the release it was built
            from (or None).

    Returns:
        A prepared `tfds.core.DatasetBuilder`.

    Raises:
        ReleaseMismatchError: the set was prepared from another release
            (the message names both folders and how to rebuild).
    """
    if data_dir is not None:
        data_dir = str(epath.Path(data_dir).expanduser())
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        if manual_dir is not None:
            _check_release(name, builder, manual_dir)
        return builder
    if manual_dir is None:
        raise ValueError(
            f"data set {name!r} is not built in {builder.data_dir}; pass manual_dir=<folder with the "
            f"release>.{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    manual_dir = epath.Path(manual_dir).expanduser()
    if not manual_dir.is_dir():
        raise FileNotFoundError(f"manual_dir for {name!r} is not a folder: {manual_dir}")
    release = release_fingerprint(manual_dir)
    tfds.disable_progress_bar()  # clean command-line output
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    with open(os.path.join(builder.data_dir, RELEASE_RECORD), "w", encoding="utf-8") as handle:
        json.dump(release, handle, indent=2)
    return builder


def load_tfds_source(name, data_dir=None, manual_dir=None, **kwargs):
    """Loads a TFDS-built IQA set as an `IQASource` (see the module docstring).

    Args:
        name: str. One of `SYNTHETIC + AUTHENTIC`.
        data_dir: str. TFDS data folder (cache).
        manual_dir: str. Release folder, needed for the first build.

    Returns:
        An `IQASource`.
    """
    if kwargs:
        raise TypeError(f"data set {name!r}: unexpected argument(s) {sorted(kwargs)}")
    builder = prepare_builder(name, data_dir=data_dir, manual_dir=manual_dir)
    dataset = builder.as_dataset(
        split="train", shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
    )
    records = sorted(tfds.as_numpy(dataset), key=lambda r: _text(r["file_name"]))
    names = [_text(r["file_name"]) for r in records]
    metadata = {"score_name": builder.info.metadata.get("score_name", "MOS")}
    for field in _PER_IMAGE:
        if records and field in records[0]:
            values = [r[field] for r in records]
            metadata[field] = [_text(v) for v in values] if isinstance(values[0], bytes) else np.asarray(values)
    if name in SYNTHETIC:
        _, groups = np.unique(metadata["reference"], return_inverse=True)
    else:
        groups = np.arange(len(records))
    low, high = builder.info.metadata["score_range"]
    return IQASource(
        name=name,
        images=[bytes(r["image"]) for r in records],
        scores=np.asarray([r["score"] for r in records], dtype=np.float32),
        groups=groups,
        names=names,
        higher_is_better=bool(builder.info.metadata["higher_is_better"]),
        score_range=(float(low), float(high)),
        metadata=metadata,
    )


def official_split(source):
    """KonIQ-10k's official split (`set` metadata) as a `Split` of indices.

    Args:
        source: an `IQASource` from `load_source("koniq10k", ...)`.

    Returns:
        A `Split` (`training` -> train, `validation`, `test`).
    """
    sets = np.asarray(source.metadata.get("set", []))
    if len(sets) != len(source) or not np.all(np.isin(sets, ["training", "validation", "test"])):
        raise ValueError(
            f"data set {source.name!r} has no complete official split (`set` metadata); KonIQ-10k needs "
            "koniq10k_distributions_sets.csv in manual_dir when it is built"
        )
    pick = lambda s: np.flatnonzero(sets == s).astype(np.int64)  # noqa: E731
    return Split(train=pick("training"), validation=pick("validation"), test=pick("test"))
