"""`python -m keras_adtrs.evaluate`: evaluate a saved ADTRS model, beside classical yardsticks.

Two kinds of `--model`:

- a `.keras` file. The command recomputes the split the train command used
  (`split_by_group`): when the model is a run's `model.keras`, the data set,
  its folders, the split's seed and fractions and the number of test crops
  default to what the run recorded in its `config.json`
  (`keras_adtrs.training.run_dir`); otherwise to the table's defaults
  (`keras_adtrs.training.config`). It scores the split's images;
- the output folder of a K-fold run (`train --folds K`): its pooled
  out-of-fold predictions (`oof_predictions.csv`), each image scored by the
  fold that held it out.

`--baseline niqe|brisque` scores the same images with a classical yardstick
(`keras_adtrs.baselines`): NIQE from a pristine model (`--niqe-model` or
`--pristine DIR`: no human score), BRISQUE's features with a regressor
fitted on the training images' labels (the split's train and validation
parts; on a K-fold run, each fold's own). It writes `evaluation.json`
(metrics with bootstrap 95% intervals, per-image predictions) and
`scatter.png` to `--output-dir`, printing a table.

Example:

```
python -m keras_adtrs.evaluate --model runs/default-20250101-120000/model.keras
python -m keras_adtrs.evaluate --model runs/clive-folds --baseline brisque niqe --pristine /usr/share/wallpapers
```

The command owns the process: the library raises typed errors, and this
command prints them with the flag at fault and exits with status 2.
"""

import argparse
import json
import os
import sys
import warnings

from keras_adtrs import console
from keras_adtrs.defaults import BOOTSTRAP_RESAMPLES, CROP_MODES, SCORING_PRECISION, add_option
from keras_adtrs.errors import ADTRSError, command_message
from keras_adtrs.reporting import to_json
from keras_adtrs.training.config import add_setting_option, default_for
from keras_adtrs.training.run_dir import RunDir

SPLITS = ("test", "validation", "train", "all")
BASELINES = ("niqe", "brisque")
THE_RUNS = "default: the run's"


def _read_run(run):
    """`(settings, split settings, config.json path)` of a run folder (empty when it has no config.json)."""
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
        description="Evaluate a saved ADTRS model (.keras, or a K-fold run's folder) on a data set split: "
        "SRCC, PLCC, PLCC after the logistic fit, KRCC and RMSE with bootstrap 95%% intervals, beside classical "
        "yardsticks (--baseline). Defaults marked 'the run's' come from the config.json of the run folder "
        "holding the model.",
    )
    parser.add_argument("--model", required=True, help="saved model file (.keras), or the output folder of a "
                        "train --folds run (its pooled out-of-fold predictions)")
    add_setting_option(parser, "dataset", default=None, default_text=THE_RUNS)
    add_setting_option(parser, "data_dir", default=None, default_text=THE_RUNS + ", for the run's data set")
    add_setting_option(parser, "manual_dir", default=None, default_text=THE_RUNS + ", for the run's data set")
    add_setting_option(parser, "csv", default=None, default_text=THE_RUNS)
    parser.add_argument("--split", choices=SPLITS, default="test", help="which part to evaluate (default: test)")
    add_setting_option(parser, "test_crops", flags=("--crops",), dest="crops", default=None,
                       default_text=f"{THE_RUNS} test crops, else {default_for('test_crops')}")
    parser.add_argument("--crop-mode", choices=CROP_MODES, default="grid", help="test grid or seeded random crops")
    add_setting_option(parser, "seed", default=None,
                       default_text=f"{THE_RUNS} split seed, else {default_for('seed')}; also seeds random crops, "
                       "the bootstrap and the BRISQUE regressor")
    add_setting_option(parser, "test_fraction", default=None, default_text=f"{THE_RUNS}, else "
                       f"{default_for('test_fraction')}")
    add_setting_option(parser, "validation_fraction", default=None, default_text=f"{THE_RUNS}, else "
                       f"{default_for('validation_fraction')}")
    add_option(parser, "score_batch_size")
    add_option(parser, "precision", help="score the model computing in this precision, same weights (default: "
               f"{SCORING_PRECISION}); auto: mixed_bfloat16 where the machine runs bfloat16 fast, else float32")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_RESAMPLES,
                        help=f"bootstrap resamples (default: {BOOTSTRAP_RESAMPLES}; 0: none)")
    parser.add_argument("--baseline", nargs="+", choices=BASELINES, default=[], metavar="NAME",
                        help="also score the same images with classical yardsticks: niqe (no human score; needs "
                        "--niqe-model or --pristine), brisque (features + a regressor fitted on the training labels)")
    parser.add_argument("--niqe-model", default=None, metavar="FILE",
                        help="--baseline niqe: a pristine model saved by keras_adtrs.baselines.NIQEModel.save")
    parser.add_argument("--pristine", nargs="+", default=None, metavar="DIR",
                        help="--baseline niqe: folders or files of undistorted photographs to fit the pristine model "
                        "on (saved as niqe_model.npz in the output folder)")
    parser.add_argument("--output-dir", default=None, help="where to write evaluation.json and scatter.png "
                        "(default: an 'evaluation' folder next to the model)")
    add_option(parser, "no_progress")
    return parser


def _choose(given, recorded, name):
    """The command-line value, else the run's recorded one, else the table's default."""
    if given is not None:
        return given
    if recorded is not None:
        return recorded
    return default_for(name)


def main(argv=None):
    """Runs the command; returns the exit status (0 on success, 2 on a bad setting or input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crops is not None and args.crops < 1:
        parser.error("--crops must be at least 1")
    if args.score_batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if not os.path.exists(args.model):
        parser.error(f"--model {args.model}: no such file or folder")
    folds_run = os.path.isdir(args.model)
    if folds_run and not os.path.isfile(RunDir(args.model).folds_path):
        parser.error(f"--model {args.model}: a folder must be the output of train --folds (no folds.json there)")
    if "niqe" in args.baseline and not (args.niqe_model or args.pristine):
        parser.error("--baseline niqe needs --niqe-model FILE or --pristine DIR")
    console.quiet_tensorflow()
    try:
        return _evaluate(args, folds_run)
    except ADTRSError as error:
        print(f"error: {command_message(error)}", file=sys.stderr)
        return 2


def _evaluate(args, folds_run):
    from keras_adtrs.data.registry import load_source
    from keras_adtrs.inference.evaluation import format_metrics_table, scatter_plot

    run = RunDir(args.model) if folds_run else RunDir.beside(args.model)
    settings, split_settings, config_path = _read_run(run if not folds_run else run.child("fold-0"))
    dataset = args.dataset or settings.get("dataset")
    if not dataset:
        raise ADTRSError("--dataset is required (the model is not in a run folder with a config.json)")
    # The run's folders and CSV belong to the run's data set.
    same_set = dataset == settings.get("dataset")
    data_dir = args.data_dir or (settings.get("data_dir") if same_set else None)
    manual_dir = args.manual_dir or (settings.get("manual_dir") if same_set else None)
    csv_path = args.csv or (settings.get("csv") if same_set else None)
    seed = int(_choose(args.seed, split_settings.get("seed"), "seed"))
    source = load_source(dataset, data_dir=data_dir, manual_dir=manual_dir, csv_path=csv_path)
    output_dir = args.output_dir or os.path.join(
        args.model if folds_run else os.path.dirname(os.path.abspath(args.model)), "evaluation")
    os.makedirs(output_dir, exist_ok=True)
    with warnings.catch_warnings():
        console.one_line_warnings()  # one clean line per warning (undefined metrics), not a source excerpt
        if folds_run:
            result, parts, title = _folds_predictions(args, run, source, seed)
        else:
            result, parts, title = _model_predictions(args, settings, split_settings, config_path, source, seed)
        result["baselines"] = _baselines(args, source, parts, seed, output_dir)
    json_path = os.path.join(output_dir, "evaluation.json")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(to_json(result), handle, indent=2, allow_nan=False)
        handle.write("\n")
    plot_path = scatter_plot(result["predictions"], result["labels"], os.path.join(output_dir, "scatter.png"),
                             title_metrics=result, title=title)
    print(title)
    print(format_metrics_table(result))
    for name, baseline in result["baselines"].items():
        print(f"\n{name} on the same {baseline['num_items']} images ({baseline['how']})")
        print(format_metrics_table(baseline))
    print(f"wrote {json_path}")
    print(f"wrote {plot_path}")
    return 0


def _model_predictions(args, settings, split_settings, config_path, source, seed):
    """A `.keras` model on a split: `(result, parts, title)`; `parts` lists `(train, test)` index pairs."""
    from keras_adtrs.data.splits import split_by_group
    from keras_adtrs.inference.evaluation import evaluate_model
    from keras_adtrs.models import LOAD_ERRORS, load_model
    from keras_adtrs.models.folding import folded_for_inference

    crops = int(_choose(args.crops, settings.get("test_crops"), "test_crops"))
    test_fraction = float(_choose(args.test_fraction, split_settings.get("test_fraction"), "test_fraction"))
    validation_fraction = float(
        _choose(args.validation_fraction, split_settings.get("validation_fraction"), "validation_fraction"))
    split = split_by_group(source.groups, test_fraction=test_fraction, validation_fraction=validation_fraction,
                           seed=seed)
    indices = list(range(len(source))) if args.split == "all" else getattr(split, args.split).tolist()
    if not indices:
        raise ADTRSError(f"the {args.split} split of {source.name!r} is empty")
    try:
        model = load_model(args.model)
    except LOAD_ERRORS as exc:
        raise ADTRSError(f"cannot load model {args.model}: {exc}") from None
    from keras_adtrs.models import in_scoring_precision

    model, why = in_scoring_precision(model, args.precision)
    if why and args.precision is not None:  # the default (auto) is recorded in the result, not printed
        print(f"precision {why}", file=sys.stderr)
    model = folded_for_inference(model)  # same scores up to float rounding, faster
    result = evaluate_model(model, source, indices, crops=crops, crop_mode=args.crop_mode, seed=seed,
                            batch_size=args.score_batch_size, bootstrap=args.bootstrap,
                            progress=not args.no_progress)
    result = {
        "model": os.path.abspath(args.model),
        "split": args.split,
        "precision": model.precision,
        "split_config": {"seed": seed, "test_fraction": test_fraction, "validation_fraction": validation_fraction,
                         "from": config_path},
        **result,
    }
    train = sorted(set(split.train.tolist()) | set(split.validation.tolist()))
    title = f"{source.name}, split {args.split} ({len(indices)} images), {crops} {args.crop_mode} crops"
    return result, [(train, indices)], title


def _folds_predictions(args, run, source, seed):
    """A K-fold run's pooled out-of-fold predictions: `(result, parts, title)`."""
    import csv

    from keras_adtrs.data.splits import kfold_by_group
    from keras_adtrs.metrics import evaluate_predictions

    record = json.loads(open(run.folds_path, encoding="utf-8").read())
    with open(run.oof_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    position = {name: i for i, name in enumerate(source.names)}
    missing = [row["file_name"] for row in rows if row["file_name"] not in position]
    if missing or len(rows) != len(source):
        raise ADTRSError(f"{run.oof_path}: its images are not those of the data set {source.name!r} "
                         f"({len(rows)} rows, {len(source)} images; e.g. {missing[:3]})")
    indices = [position[row["file_name"]] for row in rows]
    predictions = [float(row["prediction"]) for row in rows]
    labels = [float(source.scores[i]) for i in indices]
    result = evaluate_predictions(predictions, labels, bootstrap=args.bootstrap, seed=seed)
    validation_fraction = run.child("fold-0").split_settings().get("validation_fraction",
                                                                     default_for("validation_fraction"))
    splits = kfold_by_group(source.groups, int(record["folds"]), seed=int(record["seed"]),
                            validation_fraction=float(validation_fraction))
    parts = [(sorted(set(s.train.tolist()) | set(s.validation.tolist())), [int(i) for i in s.test]) for s in splits]
    result = {"model": os.path.abspath(run.path), "split": f"pooled out-of-fold ({record['folds']} folds)",
              **result, "predictions": predictions, "labels": labels,
              "names": [source.names[i] for i in indices], "indices": indices}
    title = f"{source.name}, {record['folds']}-fold pooled out-of-fold ({len(indices)} images)"
    return result, parts, title


def _baselines(args, source, parts, seed, output_dir):
    """The yardsticks on the same test images (pooled over `parts`): name -> metrics and predictions."""
    import numpy as np

    from keras_adtrs.baselines.predictions import SourceFeatures, niqe_model
    from keras_adtrs.metrics import evaluate_predictions

    features = SourceFeatures(source, progress=not args.no_progress)
    out = {}
    tests = [i for _, test in parts for i in test]
    labels = np.asarray(source.scores, np.float64)[tests]
    for name in args.baseline:
        if name == "niqe":
            model = niqe_model(args.niqe_model, args.pristine, progress=not args.no_progress)
            if not args.niqe_model:
                model.save(os.path.join(output_dir, "niqe_model.npz"))
            predictions = features.niqe(tests, model)
            how = "NIQE, " + ("negated: higher is better" if source.higher_is_better else "lower is better")
        else:
            predictions = np.concatenate([features.brisque(train, test, seed=seed) for train, test in parts])
            how = f"BRISQUE features, kernel ridge fitted on the training images of each of {len(parts)} part(s)"
        out[name] = {**evaluate_predictions(predictions, labels, bootstrap=args.bootstrap, seed=seed), "how": how,
                     "predictions": [float(p) for p in predictions], "indices": [int(i) for i in tests]}
    return out


if __name__ == "__main__":
    sys.exit(main())
