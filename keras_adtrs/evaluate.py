"""`python -m keras_adtrs.evaluate`: evaluate a saved ADTRS model on a data set split.

Recomputes the split the train command used (`split_by_group`): when the
model is a run's `model.keras`, the data set, its folders, the split's seed
and fractions and the number of test crops default to what the run recorded
in its `config.json` (`keras_adtrs.training.run_dir`); otherwise to the
defaults of `keras_adtrs.training.config`. It scores the split's images and
writes `evaluation.json` (metrics with bootstrap 95% intervals, per-image
predictions) and `scatter.png` to `--output-dir`, printing a table.

Example:

```
python -m keras_adtrs.evaluate --model runs/default-20250101-120000/model.keras
python -m keras_adtrs.evaluate --model model.keras --dataset koniq10k --data-dir ~/tensorflow_datasets \\
    --split test --crops 9 --output-dir eval
```

The library is imported in `main()`, after `keras_adtrs.console` has quieted
TensorFlow's start-up.
"""

import argparse
import json
import os
import sys
import warnings

from keras_adtrs import console
from keras_adtrs.reporting import to_json
from keras_adtrs.training.config import default_for
from keras_adtrs.training.run_dir import RunDir

SPLITS = ("test", "validation", "train", "all")


def _read_run(model_path):
    """`(settings, split settings, config.json path)` of the run folder holding the model."""
    run = RunDir.beside(model_path)
    try:
        if run.read_config() is None:
            return {}, {}, None
        return run.settings(), run.split_settings(), run.config_path
    except ValueError as exc:
        print(f"warning: ignoring {exc}", file=sys.stderr)
        return {}, {}, None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_adtrs.evaluate",
        description="Evaluate a saved ADTRS model (.keras) on a data set split: "
        "SRCC, PLCC, PLCC after the logistic fit, KRCC and RMSE with bootstrap 95%% intervals. "
        "Defaults marked 'the run's' come from the config.json of the run folder holding the model.",
    )
    parser.add_argument("--model", required=True, help="saved model file (.keras)")
    parser.add_argument("--dataset", default=None, help="data set name (default: the run's)")
    parser.add_argument("--data-dir", default=None, help="where data sets are prepared and cached "
                        "(default: the run's, for the run's data set)")
    parser.add_argument("--manual-dir", default=None, help="folder holding a data set's release files, or the image "
                        "root of --dataset csv (default: the run's, for the run's data set)")
    parser.add_argument("--csv", default=None, help="scores CSV for --dataset csv (default: the run's)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which part to evaluate (default: test)")
    parser.add_argument("--crops", type=int, default=None,
                        help=f"crops per image (default: the run's test crops, else {default_for('test_crops')})")
    parser.add_argument("--crop-mode", choices=("grid", "random"), default="grid", help="test grid or seeded random crops")
    parser.add_argument("--seed", type=int, default=None, help="split seed, also seeds random crops and the bootstrap "
                        f"(default: the run's split seed, else {default_for('seed')})")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help=f"default: the run's, else {default_for('test_fraction')}")
    parser.add_argument("--validation-fraction", type=float, default=None,
                        help=f"default: the run's, else {default_for('validation_fraction')}")
    parser.add_argument("--batch-size", type=int, default=default_for("score_batch_size"),
                        help=f"crops per forward call (default: {default_for('score_batch_size')})")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: 1000; 0: none)")
    parser.add_argument("--output-dir", default=None, help="where to write evaluation.json and scatter.png "
                        "(default: an 'evaluation' folder next to the model)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _choose(given, recorded, name):
    """The command-line value, else the run's recorded one, else the table's default."""
    if given is not None:
        return given
    if recorded is not None:
        return recorded
    return default_for(name)


def main(argv=None):
    """Runs the command; returns the exit status (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crops is not None and args.crops < 1:
        parser.error("--crops must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"--model {args.model}: no such file")

    settings, split_settings, config_path = _read_run(args.model)
    dataset = args.dataset or settings.get("dataset")
    if not dataset:
        parser.error("--dataset is required (the model is not in a run folder with a config.json)")
    # The run's folders and CSV belong to the run's data set.
    same_set = dataset == settings.get("dataset")
    data_dir = args.data_dir or (settings.get("data_dir") if same_set else None)
    manual_dir = args.manual_dir or (settings.get("manual_dir") if same_set else None)
    csv_path = args.csv or (settings.get("csv") if same_set else None)
    crops = int(_choose(args.crops, settings.get("test_crops"), "test_crops"))
    seed = int(_choose(args.seed, split_settings.get("seed"), "seed"))
    test_fraction = float(_choose(args.test_fraction, split_settings.get("test_fraction"), "test_fraction"))
    validation_fraction = float(
        _choose(args.validation_fraction, split_settings.get("validation_fraction"), "validation_fraction")
    )

    console.quiet_tensorflow()
    from keras_adtrs.data.registry import load_source
    from keras_adtrs.data.splits import split_by_group
    from keras_adtrs.inference.evaluation import evaluate_model, format_metrics_table, scatter_plot
    from keras_adtrs.models import LOAD_ERRORS, load_model
    from keras_adtrs.models.folding import folded_for_inference

    try:
        source = load_source(dataset, data_dir=data_dir, manual_dir=manual_dir, csv_path=csv_path)
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
        model = load_model(args.model)
    except LOAD_ERRORS as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return 2
    model = folded_for_inference(model)  # same scores up to float rounding, faster

    with warnings.catch_warnings():
        console.one_line_warnings()  # one clean line per warning (undefined metrics), not a source excerpt
        result = evaluate_model(
            model,
            source,
            indices,
            crops=crops,
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
        title=f"{dataset} ({args.split}, {len(indices)} images, {crops} {args.crop_mode} crops)",
    )
    print(f"{dataset}, split {args.split} ({len(indices)} images), {crops} {args.crop_mode} crops")
    print(format_metrics_table(result))
    print(f"wrote {json_path}")
    print(f"wrote {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
