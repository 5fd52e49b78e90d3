"""`python -m keras_adtrs.export`: a saved `.keras` model -> a TF Serving SavedModel.

The export itself is `keras_adtrs.serving.export.export_model`::

    python -m keras_adtrs.export --model M.keras --export-dir DIR \\
        [--name adtrs] [--version N] [--crops 9] [--max-pixels 40000000] [--overwrite]
        [--no-fold-batchnorm]

The library is imported in `main()`, after `keras_adtrs.console` has quieted
TensorFlow's start-up.
"""

import argparse
import os
import sys

from keras_adtrs import console
from keras_adtrs.serving.signatures import (
    BYTES_INPUT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    SCORE_OUTPUT,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.export",
        description="Export a saved ADTRS model (.keras) as a TF Serving SavedModel: DIR/NAME/VERSION/.",
    )
    parser.add_argument("--model", required=True, help="a .keras file saved from an ADTRSModel")
    parser.add_argument("--export-dir", required=True, help="base folder (TF Serving's base path is DIR/NAME)")
    parser.add_argument("--name", default="adtrs", help="model name (default: adtrs)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: next free integer)")
    parser.add_argument("--crops", type=int, default=9, help="crops per image in the test grid (default: 9)")
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help=f"largest H*W accepted (default: {DEFAULT_MAX_PIXELS})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--no-fold-batchnorm",
        action="store_true",
        help="serve the model as saved (default: BatchNorm folded into the convolutions, same scores, faster)",
    )
    return parser


def main(argv=None):
    """Command-line entry point; returns the exit status.

    Args:
        argv: list of str or None. Arguments (default: `sys.argv[1:]`).

    Example:
    >>> main(["--model", "m.keras", "--export-dir", "models"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.model):
        print(f"error: no such model file: {args.model}", file=sys.stderr)
        return 2
    console.quiet_tensorflow()
    from keras_adtrs.models import LOAD_ERRORS, load_model
    from keras_adtrs.serving.export import export_model

    try:
        model = load_model(args.model)
    except LOAD_ERRORS as error:
        print(f"error: cannot load {args.model}: {error}", file=sys.stderr)
        return 2
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
        )
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"exported {args.model} -> {path}")
    print(
        f"  crop {model.crop_size}, {args.crops} crops per image, max {args.max_pixels} pixels; "
        f"signatures: {DEFAULT_SIGNATURE} ({BYTES_INPUT}: string[None] -> {SCORE_OUTPUT}: float32[None]), "
        f"{IMAGES_SIGNATURE} ({IMAGES_INPUT}: uint8[None,None,None,3] -> {SCORE_OUTPUT}: float32[None])"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
