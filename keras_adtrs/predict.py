"""Score image files with a saved ADTRS model.

Takes files, folders (searched recursively for .jpg, .jpeg, .png, .bmp, .gif
and .webp files) and glob patterns. Each image is scored as the mean over the
deterministic crop grid, the same rule as the exported SavedModel. A file
that cannot be read gets an error row and the others are still scored; the
exit status is 1 when any file failed. Rows go to stdout, the progress bar to
stderr.

Example:

```
python -m keras_adtrs.predict photos/ extra/*.png --model model.keras --format json
```

The library is imported in `main()`, after `keras_adtrs.console` has quieted
TensorFlow's start-up.
"""

import argparse
import os
import sys

from keras_adtrs import console
from keras_adtrs.data.images import expand_paths
from keras_adtrs.reporting import format_rows


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.predict",
        description="Predict image quality scores with a saved ADTRS model (.keras).",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or glob patterns")
    parser.add_argument("--model", required=True, help="saved model file (.keras)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    parser.add_argument("--crops", type=int, default=9, help="grid crops per image (default: 9)")
    parser.add_argument("--batch-size", type=int, default=32, help="crops per forward call (default: 32)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None):
    """Runs the command; returns the exit status (0: all scored, 1: some failed, 2: usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crops < 1:
        parser.error("--crops must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file")

    paths = expand_paths(args.paths)
    if not paths:
        print("error: no image files found in " + " ".join(args.paths), file=sys.stderr)
        return 1

    console.quiet_tensorflow()
    from keras_adtrs.inference.scoring import score_files
    from keras_adtrs.models import LOAD_ERRORS, load_model
    from keras_adtrs.models.folding import folded_for_inference

    try:
        model = load_model(args.model)
    except LOAD_ERRORS as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return 2
    model = folded_for_inference(model)  # same scores up to float rounding, faster
    rows = score_files(model, paths, crops=args.crops, batch_size=args.batch_size, progress=not args.no_progress)
    print(format_rows(rows, args.format))
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} file(s) could not be scored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
