"""The field's protocol: train and test on several seeded splits (`--splits N`).

Split `k` uses seed `config.seed + k` (split, crops and initialisation) and
writes a full run into `OUTPUT_DIR/split-<k>/` (the epoch is always chosen on
that split's validation part). `OUTPUT_DIR/protocol.json` keeps each split's
test metrics and their median, mean, standard deviation, minimum and maximum.
"""

import dataclasses
import os

import numpy as np

from keras_adtrs.reporting import fmt_metric, summary_table
from keras_adtrs.training.config import TrainConfig, resolve_defaults
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


def run_repeated(config: TrainConfig, run_one):
    """Trains and tests on `config.splits` seeded splits; returns the protocol dict.

    Args:
        config: a `TrainConfig`; `config.splits` splits are run.
        run_one: the training loop, `config -> metrics dict`
            (`loop_tensorflow.run_training` or `loop_jax.run_training_jax`).

    Returns:
        The protocol dict (also in `OUTPUT_DIR/protocol.json`); a table is
        printed unless `config.verbose` is 0.
    """
    config = resolve_defaults(config)
    if config.splits < 1:
        raise ValueError(f"splits must be at least 1, got {config.splits}")
    base = RunDir(config.output_dir)
    base.check_writable()
    runs = []
    for k in range(config.splits):
        split_config = dataclasses.replace(config, seed=config.seed + k, output_dir=base.child(f"split-{k}").path)
        if config.verbose:
            print(f"\n=== split {k + 1} of {config.splits} (seed {split_config.seed}) ===")
        result = run_one(split_config)
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
