"""`python -m keras_adtrs.export`: a saved `.keras` model -> a TF Serving SavedModel, LiteRT or ONNX.

The export itself is `keras_adtrs.serving.export.export_model` (SavedModel),
`keras_adtrs.serving.export_litert.export_litert` or
`keras_adtrs.serving.export_onnx.export_onnx`::

    python -m keras_adtrs.export --model M.keras --export-dir DIR \\
        [--name adtrs] [--version N] [--crops 9] [--max-pixels 40000000] [--overwrite]
        [--no-fold-batchnorm] [--precision float32|mixed_bfloat16|mixed_float16]
    python -m keras_adtrs.export --model M.keras --export-dir DIR --format litert [--quantize float16|int8]
    python -m keras_adtrs.export --model M.keras --export-dir DIR --format onnx

`--precision` exports the model computing in that precision (same weights;
`keras_adtrs.models.adtrs.with_precision`, before BatchNorm is folded);
without it the model computes as it was saved. LiteRT and ONNX take float32
models only.

The library is imported in `main()`, after `keras_adtrs.console` has quieted
TensorFlow's start-up.
"""

import argparse
import os
import sys

from keras_adtrs import console
from keras_adtrs.defaults import add_option
from keras_adtrs.errors import ADTRSError, command_message
from keras_adtrs.serving.artifacts import FORMATS, ONNX_OPSET, QUANTIZATIONS, artifact_path, check_combination
from keras_adtrs.serving.signatures import (
    BYTES_INPUT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    SCORE_OUTPUT,
)
from keras_adtrs.training.run_dir import RunDir


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.export",
        description="Export a saved ADTRS model (.keras) as a TF Serving SavedModel (DIR/NAME/VERSION/), "
        "a LiteRT file (DIR/NAME[-QUANT].tflite) or an ONNX file (DIR/NAME.onnx), each with its metadata.",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="savedmodel",
        help="savedmodel (TF Serving, the default), litert (.tflite) or onnx (.onnx, opset "
        f"{ONNX_OPSET}); litert and onnx take crops (B, crop, crop, 3) and return one score per crop",
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZATIONS, default=None,
        help="litert only: float16 (float16 weights) or int8 (dynamic range: int8 weights, float32 in and out); "
        "default: float32",
    )
    parser.add_argument("--model", required=True, help="a .keras file saved from an ADTRSModel")
    parser.add_argument("--export-dir", required=True, help="base folder (TF Serving's base path is DIR/NAME)")
    parser.add_argument("--name", default="adtrs", help="model name (default: adtrs)")
    parser.add_argument("--version", type=int, default=None, help="savedmodel only: version number (default: next free integer)")
    add_option(parser, "crops", help="crops per image of the test grid (litert/onnx: recorded in the metadata)")
    parser.add_argument(
        "--max-pixels", type=int, default=None,
        help=f"savedmodel only: largest H*W accepted (default: {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version or file")
    parser.add_argument(
        "--no-fold-batchnorm",
        action="store_true",
        help="serve the model as saved (default: BatchNorm folded into the convolutions, same scores, faster)",
    )
    add_option(
        parser, "precision",
        help="savedmodel: export the model computing in this precision, same weights (mixed_bfloat16 for CPUs "
        "with AVX512-BF16 or AMX, TPUs and recent GPUs; mixed_float16 for GPUs); litert and onnx: float32 only "
        "(a mixed-precision model is exported with --precision float32); default: as the model was saved",
    )
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status.

    Args:
        argv: list of str or None. Arguments (default: `sys.argv[1:]`).

    Example:
    >>> main(["--model", "m.keras", "--export-dir", "models"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_combination(args.format, args.quantize)
    except ADTRSError as error:
        parser.error(command_message(error))
    if args.format != "savedmodel":
        for flag, value in (("--version", args.version), ("--max-pixels", args.max_pixels)):
            if value is not None:
                parser.error(f"--format {args.format} {flag} is not supported: {flag} applies to --format savedmodel only")
    if args.format != "savedmodel" and args.precision == "auto":
        args.precision = "float32"  # the only precision LiteRT and ONNX files take
    if args.format != "savedmodel" and args.precision not in (None, "float32"):
        parser.error(f"--format {args.format} --precision {args.precision} is not supported: {args.format} exports "
                     "float32 models (--precision float32; --quantize float16|int8 for a smaller LiteRT file)")
    if args.max_pixels is None:
        args.max_pixels = DEFAULT_MAX_PIXELS
    if args.crops < 1:
        parser.error(f"--crops must be at least 1, got {args.crops}")
    if not os.path.isfile(args.model):
        print(f"error: no such model file: {args.model}", file=sys.stderr)
        return 2
    path = None
    if args.format != "savedmodel":
        try:
            path = artifact_path(args.export_dir, args.name, args.format, args.quantize)
        except ValueError as error:
            parser.error(str(error))
        if os.path.exists(path) and not args.overwrite:
            print(f"error: {path} already exists; pass --overwrite to replace it", file=sys.stderr)
            return 1
    try:
        run_record = RunDir.beside(args.model).read_config()  # the score's meaning, when it is a run's model
    except ValueError as error:  # only the metadata's score description needs it
        print(f"warning: {error}; the metadata will describe the score as the training labels", file=sys.stderr)
        run_record = None
    console.quiet_tensorflow()
    from keras_adtrs.models import LOAD_ERRORS, load_model
    from keras_adtrs.serving.export import export_model

    try:
        model = load_model(args.model)
    except LOAD_ERRORS as error:
        print(f"error: cannot load {args.model}: {error}", file=sys.stderr)
        return 2
    precision_choice = None
    if args.precision is not None:
        from keras_adtrs.models.precision import choose_precision

        precision_choice = choose_precision(args.precision)[1]
        if precision_choice:
            print(f"precision {precision_choice}")
        model = _with_precision(model, args.precision, args.model)
        if model is None:
            return 1
    if path is not None:
        return _export_artifact(args, model, path, run_record)
    try:
        path = export_model(
            model,
            args.export_dir,
            name=args.name,
            version=args.version,
            num_crops=args.crops,
            max_pixels=args.max_pixels,
            overwrite=args.overwrite,
            fold_batchnorm=not args.no_fold_batchnorm,
            source_model=args.model,
            run_record=run_record,
            precision_choice=precision_choice,
        )
    except ADTRSError as error:
        print(f"error: {command_message(error)}", file=sys.stderr)
        return 2
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.model} -> {path}")
    print(
        f"  crop {model.crop_size}, {args.crops} crops per image, max {args.max_pixels} pixels, "
        f"{_policy(model)}; "
        f"signatures: {DEFAULT_SIGNATURE} ({BYTES_INPUT}: string[None] -> {SCORE_OUTPUT}: float32[None]), "
        f"{IMAGES_SIGNATURE} ({IMAGES_INPUT}: uint8[None,None,None,3] -> {SCORE_OUTPUT}: float32[None])"
    )
    return 0


def _policy(model):
    return getattr(getattr(model, "dtype_policy", None), "name", "float32")


def _with_precision(model, precision, path):
    """`model` computing in `precision` (same weights), or None after printing why it cannot."""
    from keras_adtrs.models import ADTRSModel, with_precision

    if not isinstance(model, ADTRSModel):
        print(f"error: --precision {precision}: {path} holds a {type(model).__name__}, not an ADTRSModel",
              file=sys.stderr)
        return None
    try:
        return with_precision(model, precision)
    except ValueError as error:  # a folded inference copy
        print(f"error: --precision {precision}: {path}: {error}", file=sys.stderr)
        return None


def _export_artifact(args, model, path, run_record):
    """`--format litert|onnx`: writes DIR/NAME[-QUANT].tflite or DIR/NAME.onnx and its .json."""
    options = dict(
        fold_batchnorm=not args.no_fold_batchnorm, overwrite=args.overwrite, source_model=args.model,
        run_record=run_record, num_crops=args.crops,
    )
    try:
        if args.format == "litert":
            from keras_adtrs.serving.export_litert import export_litert

            export_litert(model, path, quantize=args.quantize, **options)
        else:
            from keras_adtrs.serving.export_onnx import export_onnx

            export_onnx(model, path, **options)
    except ADTRSError as error:
        print(f"error: {command_message(error)}", file=sys.stderr)
        return 2
    except (FileExistsError, ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    quantization = f", {args.quantize}" if args.quantize else ""
    print(f"exported {args.model} -> {path} ({args.format}{quantization}; metadata {path}.json)")
    print(f"  input crops: float32[None,{model.crop_size},{model.crop_size},3], RGB in [0, 255] -> score: float32[None]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
