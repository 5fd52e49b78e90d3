"""The field's protocols: repeated seeded splits (`--splits N`) and grouped K-fold (`--folds K`).

`run_repeated`: split `k` uses seed `config.seed + k` (split, crops and
initialisation) and writes a full run into `OUTPUT_DIR/split-<k>/` (the
epoch is always chosen on that split's validation part).
`OUTPUT_DIR/protocol.json` keeps each split's test metrics and their median,
mean, standard deviation, minimum and maximum.

`run_folds`: K-fold cross-validation grouped by reference image
(`keras_adtrs.data.splits.kfold_by_group`), so every image is tested exactly
once and no content straddles a fold. The folds depend on `config.seed`
only, so every row of a comparison run with the same seed meets the same
folds. Fold `k` writes a full run into `OUTPUT_DIR/fold-<k>/`: it selects its
epoch on a validation part of its own training images, never on its test
fold, and also scores its test fold after every epoch. Then:

- the out-of-fold predictions (each image scored by the fold that held it
  out, at that fold's selected epoch) are pooled: one SRCC/PLCC/KRCC/RMSE
  over all images with seeded bootstrap 95% intervals
  (`OUTPUT_DIR/oof_predictions.csv`), plus the per-fold figures;
- the pooled out-of-fold SRCC is also computed for every epoch;
- a final model is trained on every image (`OUTPUT_DIR/final/`) for the
  number of epochs with the best pooled per-epoch SRCC (the learning-rate
  schedule stays that of the whole run), unless `final_model` is False.

`OUTPUT_DIR/folds.json` records all of it.

Run again into the same folder after a kill, `run_folds` keeps each fold that
finished with the same settings (its `metrics.json` and predictions, no
resume checkpoint left), resumes the fold that was interrupted from its
checkpoint, and runs the rest.
"""

import csv
import dataclasses
import json
import os
import warnings

import numpy as np

from keras_adtrs import metrics as iqa_metrics
from keras_adtrs.data.registry import load_source
from keras_adtrs.data.splits import Split, kfold_by_group
from keras_adtrs.defaults import BOOTSTRAP_RESAMPLES
from keras_adtrs.reporting import fmt_metric, summary_table, to_json, write_json
from keras_adtrs.training.config import TrainConfig, check_train_config, resolve_defaults
from keras_adtrs.training.resume import FIXED_SETTINGS
from keras_adtrs.training.run import StopAfterEpochs, run_training
from keras_adtrs.training.run_dir import RunDir

METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


def summarize(values):
    """Median, mean, std, min and max of the finite `values`, and how many were undefined."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    stat = (lambda f: float(f(finite)) if finite.size else None)  # noqa: E731
    return {
        "median": stat(np.median),
        "mean": stat(np.mean),
        "std": stat(np.std),
        "min": stat(np.min),
        "max": stat(np.max),
        "undefined_splits": int(values.size - finite.size),
    }


def run_repeated(config: TrainConfig):
    """Trains and tests on `config.splits` seeded splits; returns the protocol dict.

    Returns:
        The protocol dict (also in `OUTPUT_DIR/protocol.json`); a table is
        printed unless `config.verbose` is 0.
    """
    config = check_train_config(resolve_defaults(config))
    base = RunDir(config.output_dir)
    base.check_writable()
    runs = []
    for k in range(config.splits):
        split_config = dataclasses.replace(config, seed=config.seed + k, output_dir=base.child(f"split-{k}").path)
        if config.verbose:
            print(f"\n=== split {k + 1} of {config.splits} (seed {split_config.seed}) ===")
        result = run_training(split_config)
        runs.append({"split": k, "seed": split_config.seed, "best_epoch": result.get("best_epoch"),
                     "test": result.get("test", {}), "validation": result.get("validation", {})})
    summary = {name: summarize([r["test"].get(name, np.nan) for r in runs]) for name in METRICS}
    protocol = {"splits": config.splits, "dataset": config.dataset, "seeds": [r["seed"] for r in runs],
                "test": summary, "runs": runs}
    base.write_protocol(protocol)
    if config.verbose:
        rows = [[name.upper(), *(fmt_metric(summary[name][k]) for k in ("median", "mean", "std", "min", "max"))]
                for name in ("srcc", "plcc", "krcc")]
        print(f"\ntest metrics over {config.splits} splits ({config.dataset})")
        print(summary_table(rows, ["metric", "median", "mean", "std", "min", "max"]))
        print(f"outputs: {os.path.abspath(base.path)}")
    return protocol


def _metrics(predictions, labels, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", iqa_metrics.UndefinedMetricWarning)
        result = iqa_metrics.evaluate_predictions(predictions, labels, bootstrap=BOOTSTRAP_RESAMPLES, seed=seed)
    return {name: result[name] for name in METRICS} | {"num_items": result["num_items"]}


def _srcc(predictions, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", iqa_metrics.UndefinedMetricWarning)
        return iqa_metrics.srcc(predictions, labels)


def pooled_by_epoch(fold_runs, num_images, labels):
    """Pooled out-of-fold SRCC after each epoch: `[{"epoch": e (1-based), "srcc": value}]`.

    Args:
        fold_runs: list of `(RunDir, test indices)` of the folds.
        num_images: int. Images in the data set.
        labels: array of every image's human score.
    """
    by_epoch = {}
    for run, test in fold_runs:
        for epoch, values in run.read_epoch_predictions().items():
            by_epoch.setdefault(epoch, np.full(num_images, np.nan))[test] = values
    rows = []
    for epoch in sorted(by_epoch):
        predictions = by_epoch[epoch]
        covered = np.isfinite(predictions)
        if covered.all():
            rows.append({"epoch": epoch + 1, "srcc": _srcc(predictions, labels)})
    return rows


def _write_oof(path, names, labels, folds, predictions):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "score", "fold", "prediction"])
        for name, label, fold, prediction in zip(names, labels, folds, predictions):
            writer.writerow([name, f"{label:.6g}", int(fold), f"{prediction:.6g}"])


def finished_fold(run, settings, test_names):
    """The metrics of a fold that finished earlier with these settings and test images, or None.

    Args:
        run: the fold's `RunDir`.
        settings: dict of the fold's `TrainConfig` fields.
        test_names: the file names of the fold's test images.
    """
    if os.path.isdir(run.checkpoint_dir) or not all(
            os.path.isfile(p) for p in (run.metrics_path, run.predictions_path, run.epoch_predictions_path)):
        return None
    saved = run.settings()
    if any(saved.get(k) != settings.get(k) for k in (*FIXED_SETTINGS, "epochs")):
        return None
    names, _, _ = run.read_predictions()
    if sorted(names) != sorted(test_names):
        return None
    with open(run.metrics_path, encoding="utf-8") as handle:
        return json.load(handle)


def run_folds(config: TrainConfig, source=None):
    """K-fold cross-validation by group, pooled out-of-fold metrics, and a final model.

    Args:
        config: a `TrainConfig` with `folds` >= 2.
        source: optional `IQASource` to use instead of loading `config.dataset`.

    Returns:
        The folds dict (also in `OUTPUT_DIR/folds.json`); a table is printed
        unless `config.verbose` is 0.
    """
    config = check_train_config(resolve_defaults(config))
    base = RunDir(config.output_dir)
    base.check_writable()
    say = print if config.verbose else (lambda *a, **k: None)
    if source is None:
        source = load_source(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
                             csv_path=config.csv)
    splits = kfold_by_group(source.groups, config.folds, validation_fraction=config.validation_fraction,
                            seed=config.seed)
    labels = np.asarray(source.scores, np.float64)
    oof = np.full(len(source), np.nan)
    fold_of = np.full(len(source), -1)
    runs, fold_runs = [], []
    for k, split in enumerate(splits):
        fold_config = dataclasses.replace(config, folds=1, output_dir=base.child(f"fold-{k}").path, export=False)
        say(f"\n=== fold {k + 1} of {config.folds} (seed {config.seed}) ===")
        run = RunDir(fold_config.output_dir)
        result = finished_fold(run, dataclasses.asdict(fold_config), [source.names[i] for i in split.test])
        if result is not None:
            say(f"fold {k + 1} finished earlier with the same settings: kept ({run.path})")
        else:
            result = run_training(fold_config, source=source, split=split, score_test_each_epoch=True)
        names, _, predictions = run.read_predictions()
        oof[split.test] = predictions
        fold_of[split.test] = k
        fold_runs.append((run, split.test))
        runs.append({"fold": k, "best_epoch": result.get("best_epoch"), "images": {
            "train": len(split.train), "validation": len(split.validation), "test": len(split.test)},
            "test": result.get("test", {}), "validation": result.get("validation", {}),
            "train_seconds": result.get("train_seconds"), "wall_seconds": result.get("wall_seconds")})
    pooled = _metrics(oof, labels, config.seed)
    per_epoch = pooled_by_epoch(fold_runs, len(source), labels)
    _write_oof(base.oof_path, source.names, labels, fold_of, oof)
    best = max(per_epoch, key=lambda r: (r["srcc"] if np.isfinite(r["srcc"]) else -2.0)) if per_epoch else None
    record = {
        "folds": config.folds,
        "dataset": config.dataset,
        "seed": config.seed,
        "grouped_by": "reference image (synthetic sets) or image (authentic sets)",
        "pooled": pooled,
        "per_fold": runs,
        "per_fold_srcc": summarize([r["test"].get("srcc", np.nan) for r in runs]),
        "pooled_srcc_by_epoch": per_epoch,
        "final_epochs": best["epoch"] if best else None,
        "final_model": None,
    }
    write_json(base.folds_path, to_json(record))
    if config.verbose:
        _print_folds(config, record, base)
    if config.final_model and best is not None:
        say(f"\n=== final model: every image, {best['epoch']} of {config.epochs} epochs (best pooled per-epoch "
            f"SRCC {best['srcc']:.3f}) ===")
        final_config = dataclasses.replace(config, folds=1, test_fraction=0.0, validation_fraction=0.0,
                                           output_dir=base.child("final").path)
        everything = Split(train=np.arange(len(source)), validation=np.array([], np.int64),
                           test=np.array([], np.int64))
        final = run_training(final_config, source=source, split=everything,
                             extra_callbacks=[StopAfterEpochs(best["epoch"])])
        record["final_model"] = {"path": final["model"], "epochs_run": final.get("epochs_run"),
                                 "train_seconds": final.get("train_seconds")}
        write_json(base.folds_path, to_json(record))
    return record


def _print_folds(config, record, base):
    pooled = record["pooled"]
    rows = [[name.upper(), fmt_metric(pooled[name]["value"]),
             f"{fmt_metric(pooled[name]['ci_low'])} to {fmt_metric(pooled[name]['ci_high'])}"]
            for name in ("srcc", "plcc", "krcc", "rmse")]
    print(f"\npooled out-of-fold metrics over {pooled['num_items']} images, {config.folds} folds ({config.dataset})")
    print(summary_table(rows, ["metric", "value", "95% interval"]))
    fold_rows = [[r["fold"], r["images"]["test"], r["best_epoch"], fmt_metric(r["test"].get("srcc")),
                  fmt_metric(r["test"].get("plcc"))] for r in record["per_fold"]]
    print(summary_table(fold_rows, ["fold", "test images", "epoch", "SRCC", "PLCC"]))
    if record["pooled_srcc_by_epoch"]:
        print("pooled SRCC by epoch: " + ", ".join(
            f"{r['epoch']}: {fmt_metric(r['srcc'])}" for r in record["pooled_srcc_by_epoch"]))
    print(f"outputs: {os.path.abspath(base.path)}")
