"""Your own data: a CSV of image paths and scores as an `IQASource` (`csv`).

The CSV has a header row and the columns

- `image` (required): the image path, relative to the image root or absolute,
- `score` (required): the human score (any scale; see `higher_is_better`),
- `reference` (optional): the split unit; images sharing a reference (e.g.
  distorted versions of one photo) never straddle train and test. Without it
  every image is its own group.
- `std` (optional): the standard deviation of the ratings.

Other columns are ignored. The image root is `manual_dir`, or the CSV's folder
when `manual_dir` is not given. `images` holds absolute file paths (`str`),
read when used; `names` holds the `image` column as written.

Bad input raises an error naming the file, line and field: missing file or
columns, an empty CSV, an empty, non-numeric or NaN score, duplicate images,
and missing image files (the count and the first few).

Example:

```python
from keras_adtrs.data.registry import load_source

source = load_source("csv", manual_dir="photos/", csv_path="photos/scores.csv")
```

On the command line: `python -m keras_adtrs.train --dataset csv
--manual-dir IMAGE_ROOT --csv scores.csv`.
"""

import csv
import math
import os

import numpy as np

from keras_adtrs.data.source import IQASource

REQUIRED_COLUMNS = ("image", "score")
OPTIONAL_COLUMNS = ("reference", "std")
_SHOW = 5


def load_csv_source(
    data_dir=None,
    manual_dir=None,
    csv_path=None,
    higher_is_better=True,
    score_range=None,
    name="csv",
    **kwargs,
):
    """Loads a CSV of `image,score[,reference][,std]` rows as an `IQASource`.

    Args:
        data_dir: str. Accepted for a uniform interface: used as the CSV path
            when `csv_path` is not given and it names a file.
        manual_dir: str. Image root for relative paths. Defaults to the
            CSV's folder.
        csv_path: str. The CSV file.
        higher_is_better: bool. `False` for DMOS-like scores. Defaults to `True`.
        score_range: `(low, high)` of the scale. Defaults to the observed
            minimum and maximum.
        name: str. The source's name. Defaults to `"csv"`.

    Returns:
        An `IQASource` whose `images` are absolute paths.

    Example:

    >>> source = load_csv_source(csv_path="scores.csv", manual_dir="images/")  # doctest: +SKIP
    """
    if kwargs:
        raise TypeError(f"csv data set: unexpected argument(s) {sorted(kwargs)}")
    if csv_path is None and data_dir is not None and os.path.isfile(os.fspath(data_dir)):
        csv_path = data_dir
    if csv_path is None:
        raise ValueError("csv data set: pass csv_path=<CSV with columns image,score[,reference][,std]>")
    csv_path = os.path.abspath(os.path.expanduser(os.fspath(csv_path)))
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"CSV file not found: {csv_path}")
    root = os.path.abspath(os.path.expanduser(os.fspath(manual_dir))) if manual_dir else os.path.dirname(csv_path)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image root (manual_dir) is not a folder: {root}")

    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise ValueError(f"{csv_path}: the CSV is empty (expected a header row: image,score[,reference][,std])")
        columns = [h.strip().lower() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"{csv_path}: missing column(s) {missing}; found {header} (need image,score; optional reference,std)"
            )
        col = {c: columns.index(c) for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in columns}
        rows = [(line, row) for line, row in enumerate(reader, start=2) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{csv_path}: the CSV has a header but no data rows")

    def cell(row, field):
        return row[col[field]].strip() if col[field] < len(row) else ""

    names, paths, scores, refs, stds = [], [], [], [], []
    first_line = {}
    for line, row in rows:
        image = cell(row, "image")
        if not image:
            raise ValueError(f"{csv_path} line {line}: empty `image` field")
        if image in first_line:
            raise ValueError(f"{csv_path} line {line}: image {image!r} is listed again (first on line {first_line[image]})")
        first_line[image] = line
        raw = cell(row, "score")
        try:
            score = float(raw)
        except ValueError:
            raise ValueError(f"{csv_path} line {line}: `score` is not a number: {raw!r} (image {image!r})") from None
        if not math.isfinite(score):
            raise ValueError(f"{csv_path} line {line}: `score` is {raw!r} (image {image!r})")
        std = math.nan
        if "std" in col and cell(row, "std"):
            try:
                std = float(cell(row, "std"))
            except ValueError:
                raise ValueError(f"{csv_path} line {line}: `std` is not a number: {cell(row, 'std')!r}") from None
        names.append(image)
        paths.append(os.path.normpath(os.path.join(root, os.path.expanduser(image))))
        scores.append(score)
        refs.append(cell(row, "reference") if "reference" in col else "")
        stds.append(std)

    absent = [(n, p) for n, p in zip(names, paths) if not os.path.isfile(p)]
    if absent:
        shown = ", ".join(f"{n!r} (line {first_line[n]})" for n, _ in absent[:_SHOW])
        raise FileNotFoundError(
            f"{csv_path}: {len(absent)} of {len(paths)} image file(s) not found under {root}: {shown}"
            + (" ..." if len(absent) > _SHOW else "")
        )

    if "reference" in col:
        empty = [first_line[n] for n, r in zip(names, refs) if not r]
        if empty:
            raise ValueError(f"{csv_path}: empty `reference` on line(s) {empty[:_SHOW]}")
        _, groups = np.unique(np.asarray(refs), return_inverse=True)
    else:
        groups = np.arange(len(paths))
    scores = np.asarray(scores, dtype=np.float32)
    if score_range is None:
        score_range = (float(scores.min()), float(scores.max()))
    metadata = {"score_std": np.asarray(stds, dtype=np.float32), "csv_path": csv_path, "image_root": root}
    if "reference" in col:
        metadata["reference"] = refs
    return IQASource(
        name=name,
        images=paths,
        scores=scores,
        groups=groups,
        names=names,
        higher_is_better=bool(higher_is_better),
        score_range=tuple(float(v) for v in score_range),
        metadata=metadata,
    )
