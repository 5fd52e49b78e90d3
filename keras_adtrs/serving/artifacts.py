"""What every exported artifact records, and which formats and quantisations go together (imports no TensorFlow).

`python -m keras_adtrs.export --format savedmodel|litert|onnx [--quantize float16|int8]`:

| format | quantisation | file | runtime |
|---|---|---|---|
| `savedmodel` | none | `DIR/NAME/VERSION/` | TF Serving (`keras_adtrs.serving.export`) |
| `litert` | none, `float16`, `int8` | `DIR/NAME.tflite`, `DIR/NAME-float16.tflite`, `DIR/NAME-int8.tflite` | LiteRT |
| `onnx` | none | `DIR/NAME.onnx` (opset `ONNX_OPSET`) | ONNX Runtime |

`float16` stores the weights as float16 (computed in float32 on CPUs that
lack float16 arithmetic); `int8` is dynamic-range quantisation: weights int8,
activations quantised on the fly per batch, inputs and outputs float32.

Each artifact gets `<artifact>.json` beside it (`artifact_metadata`): the
crop size, the input layout and range, the score's meaning and direction,
the `keras_adtrs` version, the sha256 of the source `.keras` file, the
format, the quantisation and the ONNX opset. The SavedModel keeps its record
in `assets.extra/adtrs_export.json`, with the same fields under `deployment`.
"""

import datetime
import hashlib
import os
import uuid

from keras_adtrs.defaults import TEST_CROPS
from keras_adtrs.errors import SettingError
from keras_adtrs.serving.signatures import ARTIFACT_INPUT, ARTIFACT_OUTPUT, EXTENSIONS, metadata_path
from keras_adtrs.reporting import write_json
from keras_adtrs.version import __version__

FORMATS = ("savedmodel", "litert", "onnx")
QUANTIZATIONS = ("float16", "int8")
#: Quantisations each format supports (None: float32).
SUPPORTED = {"savedmodel": (None,), "litert": (None, "float16", "int8"), "onnx": (None,)}
#: The ONNX opset of every ONNX export: supported by ONNX Runtime >= 1.14,
#: TensorRT >= 8.6 and OpenVINO >= 2023.0.
ONNX_OPSET = 17
QUANTIZATION_NOTES = {
    None: "none: float32 weights and activations",
    "float16": "float16 weights; activations float32 where the hardware has no float16 arithmetic",
    "int8": "dynamic range: int8 weights, activations quantised per batch at run time; float32 input and output",
}
#: The largest difference from the Keras model's scores (the folded copy, the
#: same crops) each quantisation is held to, as a fraction of the score range
#: `tolerance_range` (`score_description`): 1e-4 for float32; float16 weights
#: and int8 weights lose precision by design, so their bounds are looser
#: (docs/deployment.md gives the measured differences).
TOLERANCES = {None: 1e-4, "float16": 5e-3, "int8": 5e-2}
#: Without a run record, the score range is taken as this many standard
#: deviations of the training labels (`score_scale`): about the width of the
#: LIVE-C and KonIQ-10k MOS ranges in their own standard deviations.
FALLBACK_RANGE_STDS = 5.0


def check_combination(fmt, quantize=None):
    """Raises `SettingError` naming the combination unless `fmt` supports `quantize`.

    Args:
        fmt: str. One of `FORMATS`.
        quantize: str or None. One of `QUANTIZATIONS`, or None (float32).

    Example:
    >>> check_combination("onnx", "int8")
    Traceback (most recent call last):
    keras_adtrs.errors.SettingError: quantize int8 is not supported by format onnx: ...
    """
    if fmt not in FORMATS:
        raise SettingError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise SettingError("quantize", f"must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if quantize not in SUPPORTED[fmt]:
        others = [q for q in SUPPORTED[fmt] if q is not None]
        supported = f"{fmt} takes quantize {' or '.join(others)}" if others else f"{fmt} is exported in float32 only"
        with_it = [f for f, allowed in SUPPORTED.items() if quantize in allowed]
        raise SettingError(
            "quantize", f"{quantize} is not supported by format {fmt}: {supported}; quantize {quantize} needs "
            f"format {' or '.join(with_it)}"
        )


def check_float32(model, fmt):
    """Raises `SettingError` unless `model` computes in float32 (what the LiteRT and ONNX exports take).

    A mixed-precision model (`mixed_bfloat16`, `mixed_float16`) would put its
    compute type's casts into the artifact; export a float32 copy, and
    quantise instead.
    """
    policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    if policy != "float32":
        raise SettingError(
            "precision", f"{policy}: format {fmt} exports float32 models; export a float32 copy of this model, "
            "same weights (precision float32; keras_adtrs.models.with_precision(model, 'float32')), and quantise "
            "to float16 or int8 for a smaller LiteRT file"
        )


def artifact_path(export_dir, name, fmt, quantize=None):
    """`DIR/NAME[-QUANT].tflite` or `DIR/NAME.onnx`.

    Example:
    >>> artifact_path("exports", "adtrs", "litert", "int8")
    'exports/adtrs-int8.tflite'
    """
    check_combination(fmt, quantize)
    if fmt == "savedmodel":
        raise ValueError("a SavedModel is a folder DIR/NAME/VERSION (keras_adtrs.serving.export.export_model)")
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    suffix = f"-{quantize}" if quantize else ""
    return os.path.join(os.fspath(export_dir), f"{name}{suffix}{EXTENSIONS[fmt]}")


def file_sha256(path):
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_data_set(model, run_record):
    """The run record's `data_set` when the record is the model's own run, else None."""
    if not isinstance(run_record, dict):
        return None
    data_set = run_record.get("data_set")
    recorded = run_record.get("model")
    if not isinstance(data_set, dict) or not isinstance(recorded, dict):
        return None
    for key in ("crop_size", "score_scale", "score_offset"):
        if key in recorded and recorded[key] != getattr(model, key, None):
            return None  # another model's run folder
    return data_set


def score_description(model, run_record=None):
    """What a score means: units, direction, range (from the run record when it is the model's own).

    Args:
        model: an `ADTRSModel` (its `score_scale`, `score_offset`).
        run_record: dict or None. The run's `config.json`
            (`keras_adtrs.training.run_dir.RunDir.read_config`).

    Returns:
        dict: `meaning`, `higher_is_better` (bool or None when unknown),
        `data_set`, `score_range` (`[low, high]` of the training labels, or
        None), `tolerance_range` (the width the stated tolerances are
        relative to), `label_mean`, `label_std`.
    """
    scale = float(getattr(model, "score_scale", 1.0))
    offset = float(getattr(model, "score_offset", 0.0))
    data_set = _run_data_set(model, run_record)
    description = {
        "meaning": "predicted quality, as the training labels (their units and direction)",
        "higher_is_better": None,
        "data_set": None,
        "score_range": None,
        "tolerance_range": FALLBACK_RANGE_STDS * abs(scale),
        "label_mean": offset,
        "label_std": scale,
    }
    if data_set is not None:
        better = data_set.get("higher_is_better")
        score_range = data_set.get("score_range")
        name = data_set.get("name")
        description.update(
            meaning=f"predicted quality in the units of the {name} training labels"
            + ("" if better is None else (": higher is better" if better else ": lower is better (DMOS)")),
            higher_is_better=better,
            data_set=name,
        )
        if isinstance(score_range, (list, tuple)) and len(score_range) == 2:
            description["score_range"] = [float(score_range[0]), float(score_range[1])]
            width = float(score_range[1]) - float(score_range[0])
            if width > 0:
                description["tolerance_range"] = width
    return description


def deployment_record(model, fmt, quantize=None, source_model=None, run_record=None, num_crops=TEST_CROPS,
                      precision_choice=None):
    """The fields every artifact's metadata holds (also the SavedModel's `deployment` block).

    Args:
        model: the exported model (the BatchNorm-folded copy).
        fmt: str. One of `FORMATS`.
        quantize: str or None. One of `QUANTIZATIONS`.
        source_model: str or None. The `.keras` file it came from (hashed).
        run_record: dict or None. The run's `config.json`, for the score's meaning.
        num_crops: int. Crops per image in the grid images should be scored with.
        precision_choice: str or None. How an `auto` precision was chosen
            (`keras_adtrs.models.precision.choose_precision`), recorded beside
            the precision.

    Returns:
        dict, JSON-serialisable.
    """
    crop = int(model.crop_size)
    source = None
    if source_model is not None:
        source = {"file": os.path.basename(os.fspath(source_model)), "sha256": file_sha256(source_model)}
    return {
        "format": fmt,
        "quantization": quantize or "none",
        "quantization_detail": QUANTIZATION_NOTES[quantize],
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        "keras_adtrs_version": __version__,
        "source_model": source,
        "crop_size": crop,
        "input": {
            "name": ARTIFACT_INPUT,
            "dtype": "float32",
            "shape": [None, crop, crop, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "range": [0, 255],
            "note": "decoded pixel values, not normalised: the model normalises its input itself",
        },
        "output": {"name": ARTIFACT_OUTPUT, "dtype": "float32", "shape": [None], "per": "crop"},
        "image_score": {
            "num_crops": int(num_crops),
            "rule": "upscale when the shorter side is below the crop (bilinear, aspect kept), take the "
            "deterministic grid of num_crops crops, average their scores (docs/model.md, keras_adtrs/data/crops.py)",
        },
        "score": score_description(model, run_record),
        "tolerance": {
            "max_abs_difference_from_keras": TOLERANCES[quantize] * score_description(model, run_record)["tolerance_range"],
            "fraction_of_score_range": TOLERANCES[quantize],
            "note": "largest difference from the Keras model's score on the same crops that the tests allow",
        },
        "batchnorm_folded": int(getattr(model, "batchnorm_folded", 0)),
        # The compute precision inside (float32 for LiteRT and ONNX; a SavedModel may be mixed: export --precision).
        "precision": getattr(getattr(model, "dtype_policy", None), "name", "float32"),
        "precision_chosen_by": precision_choice,
    }


def artifact_metadata(model, path, fmt, quantize=None, source_model=None, run_record=None, num_crops=TEST_CROPS,
                      converter=None):
    """`deployment_record` plus the artifact's own file, size, hash and converter.

    Args:
        path: str. The artifact written.
        converter: str or None. What converted it (name and version).
        Others: see `deployment_record`.
    """
    record = deployment_record(model, fmt, quantize, source_model, run_record, num_crops)
    record.update(
        file=os.path.basename(path),
        bytes=os.path.getsize(path),
        sha256=file_sha256(path),
        converter=converter,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def write_artifact(path, write, metadata, overwrite=False):
    """Writes an artifact and its metadata; nothing is left half-written.

    `write(tmp_path)` writes the artifact to a temporary name beside `path`;
    `metadata(tmp_path)` returns its record (`artifact_metadata`), written to
    `<path>.json`; then the artifact is renamed into place. On any failure
    the temporary file is removed.

    Args:
        path: str. The artifact's final path.
        write: callable `(tmp_path) -> None`.
        metadata: callable `(tmp_path) -> dict`.
        overwrite: bool. Replace an existing artifact. Defaults to `False`
            (a `FileExistsError` naming the file is raised).

    Returns:
        str, `path`.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    base, extension = os.path.splitext(os.path.basename(path))
    tmp = os.path.join(folder, f".tmp-{base}-{os.getpid()}-{uuid.uuid4().hex[:8]}{extension}")
    try:
        write(tmp)
        if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            raise RuntimeError(f"the converter wrote nothing to {tmp}")
        record = metadata(tmp)
        record["file"] = os.path.basename(path)
        write_json(metadata_path(path), record)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
