"""Evaluate a saved ADTRS model on a data set split.

Recomputes the split the train command used (`split_by_group`; its seed and
fractions default to the `"split"` entry of the `config.json` next to the
model, when there is one), scores the split's images, and writes
`evaluation.json` (metrics with bootstrap 95% intervals, per-image
predictions) and `scatter.png` to `--output-dir`, printing a table.

Example:

```
python -m keras_adtrs.evaluate --model runs/koniq/model.keras --dataset koniq10k \\
    --split test --crops 9 --output-dir runs/koniq/eval
```
"""

import argparse
import json
import os
import sys
import warnings

from keras_adtrs.console import one_line_warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SPLITS = ("test", "validation", "train", "all")


def _read_config(model_path):
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if not os.path.isfile(path):
        return {}, None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"warning: ignoring unreadable {path}: {exc}", file=sys.stderr)
        return {}, None
    return (config if isinstance(config, dict) else {}), path


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.evaluate",
        description="Evaluate a saved ADTRS model (.keras) on a data set split: "
        "SRCC, PLCC, PLCC after the logistic fit, KRCC and RMSE with bootstrap 95%% intervals.",
    )
    parser.add_argument("--model", required=True, help="saved model file (.keras)")
    parser.add_argument(
        "--dataset", default=None, help="data set name (see keras_adtrs.data.source); defaults to config.json's"
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--manual-dir", default=None, help="folder holding a data set's release files (or the image root of --dataset csv)")
    parser.add_argument("--csv", default=None, help="scores CSV for --dataset csv (default: config.json's)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which part to evaluate (default: test)")
    parser.add_argument("--crops", type=int, default=9, help="crops per image (default: 9)")
    parser.add_argument("--crop-mode", choices=("grid", "random"), default="grid", help="test grid or seeded random crops")
    parser.add_argument("--seed", type=int, default=None, help="split seed, also seeds random crops and the bootstrap "
                        "(default: config.json's split seed, else 0)")
    parser.add_argument("--test-fraction", type=float, default=None, help="default: config.json's, else 0.2")
    parser.add_argument("--validation-fraction", type=float, default=None, help="default: config.json's, else 0.1")
    parser.add_argument("--batch-size", type=int, default=32, help="crops per forward call (default: 32)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000; 0: none)")
    parser.add_argument("--output-dir", default=None, help="where to write evaluation.json and scatter.png "
                        "(default: an 'evaluation' folder next to the model)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None):
    """Runs the command; returns the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crops < 1:
        parser.error("--crops must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file")

    config, config_path = _read_config(args.model)
    split_config = config.get("split") if isinstance(config.get("split"), dict) else {}
    dataset = args.dataset or config.get("dataset")
    if not dataset:
        parser.error("--dataset is required (no dataset in a config.json next to the model)")
    seed = args.seed if args.seed is not None else int(split_config.get("seed", 0))
    test_fraction = args.test_fraction if args.test_fraction is not None else float(split_config.get("test_fraction", 0.2))
    validation_fraction = (
        args.validation_fraction
        if args.validation_fraction is not None
        else float(split_config.get("validation_fraction", 0.1))
    )

    import keras

    import keras_adtrs  # noqa: F401  (registers the model's classes)
    from keras_adtrs.data.source import load_source
    from keras_adtrs.data.splits import split_by_group
    from keras_adtrs.inference.evaluation import evaluate_model, format_metrics_table, scatter_plot, to_json

    try:
        settings = config.get("settings") if isinstance(config.get("settings"), dict) else {}
        csv_path = args.csv or (settings.get("csv") if dataset == "csv" else None)
        extra = {"csv_path": csv_path} if csv_path else {}
        source = load_source(dataset, data_dir=args.data_dir, manual_dir=args.manual_dir, **extra)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: cannot load data set {dataset!r}: {exc}", file=sys.stderr)
        return 2
    if args.split == "all":
        indices = list(range(len(source)))
    else:
        try:
            split = split_by_group(source.groups, test_fraction=test_fraction,
                                   validation_fraction=validation_fraction, seed=seed)
        except ValueError as exc:
            parser.error(str(exc))
        indices = getattr(split, args.split).tolist()
    if not indices:
        print(f"error: the {args.split} split of {dataset!r} is empty", file=sys.stderr)
        return 2

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except Exception as exc:  # noqa: BLE001 (any load failure is reported, not traced)
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return 2
    from keras_adtrs.models.folding import folded_for_inference

    model = folded_for_inference(model)  # same scores up to float rounding, faster

    with warnings.catch_warnings():
        one_line_warnings()  # one clean line per warning (undefined metrics), not a source excerpt
        result = evaluate_model(
            model,
            source,
            indices,
            crops=args.crops,
            crop_mode=args.crop_mode,
            seed=seed,
            batch_size=args.batch_size,
            bootstrap=args.bootstrap,
            progress=not args.no_progress,
        )
    result = {
        "model": os.path.abspath(args.model),
        "split": args.split,
        "split_config": {"seed": seed, "test_fraction": test_fraction, "validation_fraction": validation_fraction,
                         "from": config_path},
        **result,
    }
    output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.model)), "evaluation")
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "evaluation.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(to_json(result), handle, indent=2, allow_nan=False)
        handle.write("\n")
    plot_path = scatter_plot(
        result["predictions"],
        result["labels"],
        os.path.join(output_dir, "scatter.png"),
        title_metrics=result,
        title=f"{dataset} ({args.split}, {len(indices)} images, {args.crops} {args.crop_mode} crops)",
    )
    print(f"{dataset}, split {args.split} ({len(indices)} images), {args.crops} {args.crop_mode} crops")
    print(format_metrics_table(result))
    print(f"wrote {json_path}")
    print(f"wrote {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
