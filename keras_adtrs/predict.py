"""Score image files with a saved ADTRS model.

Takes files, folders (searched recursively for .jpg, .jpeg, .png, .bmp, .gif
and .webp files) and glob patterns. Each image is scored as the mean over the
deterministic crop grid, the same rule as the exported SavedModel. A file
that cannot be read gets an error row and the others are still scored; the
exit status is 1 when any file failed. Rows go to stdout, the progress bar to
stderr.

`--engine beam` runs the same scoring as an Apache Beam pipeline
(`keras_adtrs.serving.scoring_beam`, the `beam` extra): sharded CSV, Parquet
or JSON Lines outputs, an error output, resumable with `--skip-scored`, on
the DirectRunner with every local core or on a cluster runner
(docs/scale.md).

`--runtime litert|onnx` scores with an exported artifact (`.tflite`,
`.onnx`, from `python -m keras_adtrs.export --format litert|onnx`) instead of
the `.keras` model, with the same decoding and crop grid; `--map OUT_DIR`
also writes a quality map of each image (`keras_adtrs.inference.quality_map`):
`OUT_DIR/<name>.png` and `OUT_DIR/<name>.npy`.

Example:

```
python -m keras_adtrs.predict photos/ extra/*.png --model model.keras --format json
python -m keras_adtrs.predict photos/ --runtime litert --model exports/adtrs.tflite --map maps/
python -m keras_adtrs.predict --engine beam photos/ --model model.keras --output out/photos --output-format parquet
```

The library is imported in `main()`, after `keras_adtrs.console` has quieted
TensorFlow's start-up.
"""

import argparse
import contextlib
import os
import sys

from tqdm.auto import tqdm

from keras_adtrs import console
from keras_adtrs.data.images import expand_paths
from keras_adtrs.defaults import SCORING_PRECISION, add_option
from keras_adtrs.errors import ADTRSError, command_message
from keras_adtrs.serving.runtimes import ArtifactError, load_artifact, runtime_for
from keras_adtrs.serving.signatures import RUNTIMES
from keras_adtrs.reporting import format_rows


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.predict",
        description="Predict image quality scores with a saved ADTRS model (.keras) or an exported "
        "LiteRT / ONNX artifact; optionally write quality maps.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="image files, folders (recursive) or glob patterns (with --engine beam: also gs://, s3://)")
    parser.add_argument("--paths-from", action="append", default=[], metavar="FILE",
                        help="a text file listing one path per line (may be repeated)")
    parser.add_argument("--model", required=True, help="saved model file (.keras), or an exported .tflite / .onnx "
                        "file (--engine beam: a .keras file or a SavedModel folder)")
    parser.add_argument("--engine", choices=("local", "beam"), default="local",
                        help="local: this process (default); beam: an Apache Beam pipeline (the beam extra) on the "
                        "DirectRunner with every local core, or the --runner given; Beam's own options pass through")
    beam = parser.add_argument_group("--engine beam")
    beam.add_argument("--output", metavar="PREFIX", default=None,
                      help="shards PREFIX-scores-* and PREFIX-errors-* (required with --engine beam)")
    beam.add_argument("--output-format", choices=("csv", "parquet", "jsonl"), default="csv",
                      help="format of the shards (default: csv)")
    beam.add_argument("--skip-scored", metavar="PREFIX", default=None,
                      help="leave out the paths already in PREFIX-scores-* (a killed run goes on where it stopped)")
    beam.add_argument("--rows-per-shard", type=int, default=1000,
                      help="rows per output shard at most; a shard is written as soon as it is full (default: 1000)")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=None,
        help="keras (.keras model), litert (.tflite) or onnx (.onnx); default: from the --model file name",
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    add_option(parser, "crops")
    add_option(parser, "score_batch_size")
    add_option(parser, "precision", help="score the .keras model computing in this precision, same weights "
               f"(default: {SCORING_PRECISION}); auto: mixed_bfloat16 where the machine runs bfloat16 fast, "
               "else float32")
    add_option(parser, "no_progress")
    parser.add_argument(
        "--map", metavar="OUT_DIR", default=None,
        help="also write a quality map of each image: OUT_DIR/<name>.png (heat map of crop scores) and <name>.npy",
    )
    parser.add_argument(
        "--stride", type=int, default=None,
        help="--map: largest distance between neighbouring crops of the map's grid (default: a quarter of the crop)",
    )
    return parser


def main(argv=None):
    """Runs the command; returns the exit status (0: all scored, 1: some failed, 2: usage)."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.engine != "beam":
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    if not args.paths and not args.paths_from:
        parser.error("give image paths, folders or patterns, or --paths-from FILE")
    if args.engine == "beam":
        return _run_beam(parser, args, beam_args)
    beam_only = [flag for flag, value in (("--output", args.output), ("--skip-scored", args.skip_scored),
                                          ("--output-format", args.output_format != "csv"),
                                          ("--rows-per-shard", args.rows_per_shard != 1000)) if value]
    if beam_only:
        parser.error(f"{', '.join(beam_only)} apply to --engine beam only")
    if args.crops < 1:
        parser.error("--crops must be at least 1")
    if args.score_batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file")
    runtime = args.runtime or runtime_for(args.model)
    if runtime == "keras" and runtime_for(args.model) != "keras":
        parser.error(f"--runtime keras takes a .keras model, not {args.model}; use --runtime {runtime_for(args.model)}")
    if args.precision is not None and runtime != "keras":
        parser.error(f"--precision applies to .keras models, not to --runtime {runtime} (float32 files)")
    if args.stride is not None and args.map is None:
        parser.error("--stride applies to --map only")
    if args.stride is not None and args.stride < 1:
        parser.error("--stride must be at least 1")

    listed = []
    for listing in args.paths_from:
        try:
            with open(listing, encoding="utf-8") as handle:
                listed += [line.strip() for line in handle if line.strip() and not line.strip().startswith("#")]
        except OSError as exc:
            parser.error(f"--paths-from {listing}: {exc.strerror or exc}")
    paths = expand_paths([*args.paths, *listed])
    if not paths:
        print("error: no image files found in " + " ".join(args.paths), file=sys.stderr)
        return 1

    # TensorFlow (on its backend) decodes and crops for every runtime, so an
    # artifact sees the pixels the Keras model and the SavedModel see.
    console.quiet_tensorflow()
    from keras_adtrs.models.scoring import score_files

    if runtime == "keras":
        from keras_adtrs.models import LOAD_ERRORS, load_model
        from keras_adtrs.models.folding import folded_for_inference

        try:
            model = load_model(args.model)
        except LOAD_ERRORS as exc:
            print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
            return 2
        model = _in_scoring_precision(model, args.precision)
        model = folded_for_inference(model)  # same scores up to float rounding, faster
    else:
        try:
            model = load_artifact(args.model, runtime)
        except (ArtifactError, ImportError) as exc:
            print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
            return 2
    if args.stride is not None and args.stride > model.crop_size:
        parser.error(f"--stride must be at most the crop size {model.crop_size}")
    try:
        rows = score_files(model, paths, crops=args.crops, batch_size=args.score_batch_size,
                           progress=not args.no_progress)
        print(format_rows(rows, args.format))
        if args.map is not None:
            _write_maps(model, rows, args)
    except ADTRSError as error:
        print(f"error: {command_message(error)}", file=sys.stderr)
        return 2
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} file(s) could not be scored", file=sys.stderr)
        return 1
    return 0


def _run_beam(parser, args, beam_args):
    """`--engine beam`: the Apache Beam pipeline (`keras_adtrs.serving.scoring_beam`)."""
    for flag, value in (("--map", args.map), ("--stride", args.stride), ("--runtime", args.runtime)):
        if value is not None:
            parser.error(f"{flag} applies to --engine local only")
    if args.output is None:
        parser.error("--engine beam needs --output PREFIX")
    console.quiet_tensorflow()
    quiet = contextlib.nullcontext() if console.verbose_requested() else console.live_filtered_stderr(console.BEAM_NOISE)
    with quiet:
        try:
            from keras_adtrs.serving.scoring_beam import ScoringJob, run_scoring
        except ImportError as exc:
            print(f"error: --engine beam needs Apache Beam: pip install 'keras-adtrs[beam]' ({exc})", file=sys.stderr)
            return 2
        job = ScoringJob(patterns=list(args.paths), path_lists=list(args.paths_from), model=args.model,
                         output=args.output, output_format=args.output_format, crops=args.crops,
                         batch_size=args.score_batch_size, skip_scored=args.skip_scored,
                         rows_per_shard=args.rows_per_shard, precision=args.precision)
        try:
            result = run_scoring(job, console.quiet_beam(beam_args), progress=not args.no_progress)
        except ADTRSError as error:
            print(f"error: {command_message(error)}", file=sys.stderr)
            return 2
    counters = result["counters"]
    failed = sum(v for k, v in counters.items() if k.startswith("failures_"))
    print(f"scored {counters.get('images_scored', 0)} image(s), {failed} failed"
          + (f", {result['skipped']} already scored" if result["skipped"] else "")
          + f" in {result['wall_seconds']:.0f} s ({result['images_per_second']} images/s); "
          f"shards {args.output}-scores-*, {args.output}-errors-*")
    for name in sorted(k for k in counters if k.startswith("failures_")):
        print(f"  {name[len('failures_'):]}: {counters[name]}")
    return 1 if failed else 0


def _in_scoring_precision(model, precision):
    """The model computing in `precision` (None: the default; same weights).

    Says what `auto` chose when it was asked for by name; the default stays
    silent, so that the output is the rows alone.
    """
    from keras_adtrs.models import in_scoring_precision

    model, why = in_scoring_precision(model, precision)
    if why and precision is not None:
        print(f"precision {why}", file=sys.stderr)
    return model


def _map_names(paths):
    """A unique file stem per path: the file's own stem, with `-2`, `-3`, ... on a clash."""
    names, used = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        name, k = stem, 1
        while name.lower() in used:
            k += 1
            name = f"{stem}-{k}"
        used.add(name.lower())
        names.append(name)
    return names


def _score_direction(model, model_path):
    """Whether higher scores are better, from the artifact's metadata or the run folder; None if unknown."""
    metadata = getattr(model, "metadata", None)
    if isinstance(metadata, dict):
        return (metadata.get("score") or {}).get("higher_is_better")
    from keras_adtrs.training.run_dir import RunDir

    try:
        record = RunDir.beside(model_path).read_config() or {}
    except ValueError:
        return None  # an unreadable config.json only costs the colours' direction
    return (record.get("data_set") or {}).get("higher_is_better")


def _write_maps(model, rows, args):
    """`--map OUT_DIR`: a PNG and a .npy per scored file (files with an error row get none)."""
    from keras_adtrs.inference.quality_map import quality_map, save_quality_map

    scored = [row for row in rows if "score" in row]
    better = _score_direction(model, args.model)
    os.makedirs(args.map, exist_ok=True)
    bar = tqdm(total=len(scored), disable=args.no_progress, file=sys.stderr, unit="image", desc="maps", leave=False)
    with bar:
        for row, name in zip(scored, _map_names([row["path"] for row in scored])):
            qmap = quality_map(model, row["path"], stride=args.stride, batch_size=args.score_batch_size)
            grid_rows, grid_cols = qmap.scores.shape
            title = (
                f"{os.path.basename(row['path'])}: score {row['score']:.2f} ({args.crops}-crop grid)\n"
                f"map: {grid_rows}x{grid_cols} crops of {qmap.crop_size}, stride {qmap.stride}, mean {qmap.score:.2f}"
            )
            save_quality_map(qmap, os.path.join(args.map, name + ".png"), title=title, higher_is_better=better)
            bar.update(1)
    print(f"{len(scored)} quality map(s) in {args.map}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
