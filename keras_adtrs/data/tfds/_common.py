"""Helpers shared by the IQA TFDS builders (file lookup, image bytes, .mat, .xlsx)."""

import io
import math
import re
import zipfile
import xml.etree.ElementTree as ET

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from keras_adtrs.data.images import PIL_DECODE_ERRORS

from keras_adtrs.data.matlab import loadmat, mat_strings  # noqa: F401  (the builders' .mat readers)

# Image policy: the original encoded bytes are stored when TensorFlow's
# `tf.io.decode_image(..., channels=3, dtype=tf.uint8)` reads them as intended
# (JPEG in RGB or grayscale, any PNG: grayscale is replicated to RGB, alpha is
# dropped and 16-bit is scaled to 8 bits at decode time, uncompressed 24/32-bit
# BMP). Anything else (CMYK JPEG, palettized or compressed BMP, GIF, TIFF...)
# is converted with Pillow to an 8-bit RGB PNG.


def citation(builder_file):
    """The BibTeX of a builder's data set: `CITATIONS.bib` beside its module (`__file__`)."""
    return (epath.Path(builder_file).parent / "CITATIONS.bib").read_text()


def image_feature():
    """`tfds.features.Image` for uint8 RGB images stored in their own encoding."""
    return tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format=None)


def _keep_bytes(data):
    if data[:3] == b"\xff\xd8\xff":
        try:
            mode = Image.open(io.BytesIO(data)).mode
        except PIL_DECODE_ERRORS:  # let the converter raise a clear error
            return False
        return mode in ("RGB", "L")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return True
    if data[:2] == b"BM" and len(data) >= 34:
        bpp = int.from_bytes(data[28:30], "little")
        compression = int.from_bytes(data[30:34], "little")
        return bpp in (24, 32) and compression == 0
    return False


def _to_rgb_png(data, path):
    try:
        image = Image.open(io.BytesIO(data))
        image.seek(0)
        if image.mode in ("I", "I;16", "I;16B", "I;16L"):
            pixels = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8))
        image = image.convert("RGB")
    except PIL_DECODE_ERRORS as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from exc
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_image_bytes(path):
    """Encoded bytes of `path`, kept as stored where TensorFlow decodes them, else RGB PNG."""
    path = epath.Path(path)
    data = path.read_bytes()
    return data if _keep_bytes(data) else _to_rgb_png(data, path)


def find_root(manual_dir, marker, subdirs=()):
    """The release root under `manual_dir`: the folder holding `marker`.

    Looks in `manual_dir` itself, then in `manual_dir/<subdir>` for each of
    `subdirs`, then one level down.
    """
    manual_dir = epath.Path(manual_dir)
    candidates = [manual_dir] + [manual_dir / s for s in subdirs]
    if manual_dir.is_dir():
        candidates += sorted(p for p in manual_dir.iterdir() if p.is_dir())
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    raise FileNotFoundError(
        f"{marker!r} not found in manual_dir {manual_dir} (nor in its subfolders "
        f"{', '.join(map(str, subdirs)) or '(none)'}); see the data set's MANUAL_DOWNLOAD_INSTRUCTIONS."
    )


def case_insensitive_index(folder, recursive=False):
    """`{lower-case file name: path}` of the files in `folder`."""
    folder = epath.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    index, pending = {}, [folder]
    while pending:
        for p in sorted(pending.pop().iterdir()):
            if p.is_dir():
                if recursive:
                    pending.append(p)
            else:
                index.setdefault(p.name.lower(), p)
    return index


def lookup(index, name, folder):
    try:
        return index[name.lower()]
    except KeyError:
        raise FileNotFoundError(f"image {name!r} listed in the labels is missing from {folder}") from None


def nan():
    return float("nan")


def to_float(value, where):
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: not a number: {value!r}") from None
    if math.isnan(result):
        raise ValueError(f"{where}: score is NaN")
    return result


# Minimal .xlsx reading (the CSIQ release ships its DMOS as csiq.DMOS.xlsx);
# avoids a dependency on openpyxl.
_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def _column_index(cell_ref):
    letters = re.match(r"[A-Z]+", cell_ref).group(0)
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - 64)
    return index - 1


def read_xlsx(path, sheet=None):
    """Rows (lists of str) of one sheet of an .xlsx file (`sheet` name, else the first)."""
    path = epath.Path(path)
    with path.open("rb") as f, zipfile.ZipFile(io.BytesIO(f.read())) as z:
        shared = []
        if "xl/sharedStrings.xml" in z.namelist():
            for si in ET.fromstring(z.read("xl/sharedStrings.xml")).findall("m:si", _NS):
                shared.append("".join(t.text or "" for t in si.iter(f"{{{_NS['m']}}}t")))
        workbook = ET.fromstring(z.read("xl/workbook.xml"))
        sheets = workbook.findall("m:sheets/m:sheet", _NS)
        chosen = next((s for s in sheets if sheet is not None and s.get("name") == sheet), sheets[0])
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        target = next(r.get("Target") for r in rels if r.get("Id") == chosen.get(_REL))
        target = target.lstrip("/")
        target = target if target.startswith("xl/") else "xl/" + target
        rows = []
        for row in ET.fromstring(z.read(target)).iter(f"{{{_NS['m']}}}row"):
            values = {}
            for position, cell in enumerate(row.findall("m:c", _NS)):
                kind, v = cell.get("t"), cell.find("m:v", _NS)
                if kind == "s":
                    text = shared[int(v.text)]
                elif kind == "inlineStr":
                    text = "".join(t.text or "" for t in cell.iter(f"{{{_NS['m']}}}t"))
                else:
                    text = v.text if v is not None else ""
                ref = cell.get("r")
                values[_column_index(ref) if ref else position] = text or ""
            if values:
                rows.append([values.get(i, "") for i in range(max(values) + 1)])
        return rows
