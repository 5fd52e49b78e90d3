"""What the TensorFlow and JAX training loops share.

`keras_adtrs.training.loop_tensorflow.run_training` and
`keras_adtrs.training.loop_jax.run_training_jax` both load a data set, split
it by group with a seed, build the model from the run's settings, train while
selecting the epoch on the validation part (never the test part), score the
test part by averaging a deterministic crop grid and write everything into the
run folder (`keras_adtrs.training.run_dir`). The pieces they share are here.
"""

import dataclasses
import datetime
import os
import platform
import sys
import warnings

import keras
import numpy as np
import scipy

from keras_adtrs import metrics as iqa_metrics
from keras_adtrs.data.splits import split_by_group
from keras_adtrs.models.adtrs import build_adtrs
from keras_adtrs.models.precision import UnsupportedPrecisionError, check_precision
from keras_adtrs.reporting import fmt_metric, summary_table
from keras_adtrs.training.config import parse_loss_weights
from keras_adtrs.version import __version__


def versions():
    """Versions of what the run used (TensorFlow and JAX only if this process imported them)."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "keras_adtrs": __version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    for name in ("tensorflow", "jax"):
        module = sys.modules.get(name)
        if module is not None:
            info[name] = getattr(module, "__version__", "unknown")
    return info


def split_parts(config, source, say=print):
    """The seeded split of `source`: `(split, train, validation, test)` sources."""
    split = split_by_group(
        source.groups,
        test_fraction=config.test_fraction,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
    )
    parts = tuple(source.subset(idx) for idx in (split.train, split.validation, split.test))
    say(
        f"data set {source.name}: {len(source)} images -> train {len(parts[0])}, "
        f"validation {len(parts[1])}, test {len(parts[2])} (split seed {config.seed})"
    )
    return (split,) + parts


def training_steps(config, num_train):
    """Steps per epoch; exits with a clear error when not one batch fits."""
    steps = config.steps_per_epoch or (num_train * config.crops_per_image) // config.batch_size
    if steps < 1:
        raise SystemExit(
            f"error: {num_train} training images x {config.crops_per_image} crops "
            f"do not fill one batch of {config.batch_size}"
        )
    return steps


def label_statistics(config, train_src):
    """`(mean, std)` of the training labels that `ScoreAffine` maps back to."""
    mean = float(np.mean(train_src.scores))
    std = float(np.std(train_src.scores)) or 1.0
    return mean, std


def require_precision(config):
    """Exits with a clear error (naming the precision and the device) when this machine lacks `config.precision`."""
    try:
        check_precision(config.precision)
    except UnsupportedPrecisionError as exc:
        raise SystemExit(f"error: {exc}") from None


def build_model(config, label_mean, label_std):
    """`build_adtrs` with the run's settings (a bad setting or `--init-from` file exits with its message)."""
    try:
        return _build(config, label_mean, label_std)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _build(config, label_mean, label_std):
    return build_adtrs(
        crop_size=config.crop_size,
        backbone_weights=config.backbone_weights,
        backbone=config.backbone,
        layer4_pooling=config.layer4_pooling,
        batchnorm_momentum=config.batchnorm_momentum,
        score_scale=label_std if config.standardize_labels else 1.0,
        score_offset=label_mean if config.standardize_labels else 0.0,
        l2_weight_decay=config.weight_decay,
        precision=config.precision,
        init_from=config.init_from,
        loss_weights=parse_loss_weights(config.loss_weights),
    )


def learning_rate(config, total_steps):
    """The optimizer's learning rate: a constant, or a cosine decay over `total_steps`."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1), alpha=0.01)
    raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {config.lr_schedule!r}")


def run_record(config, model, source, parts, label_mean, label_std, steps, replicas, **extra):
    """What config.json records about a run (written by `RunDir.write_config`)."""
    train_src, val_src, test_src = parts
    return {
        "settings": dataclasses.asdict(config),
        **extra,
        "backbone_weights": model.backbone_weights_info,
        "model": model.get_config(),
        "data_set": {
            "name": source.name,
            "images": len(source),
            "higher_is_better": source.higher_is_better,
            "score_range": list(source.score_range),
            **{k: v for k, v in source.metadata.items() if isinstance(v, (str, int, float))},
        },
        "split": {
            "seed": config.seed,
            "test_fraction": config.test_fraction,
            "validation_fraction": config.validation_fraction,
            "by": "group (reference image for synthetic sets, image for authentic sets)",
            "counts": {"train": len(train_src), "validation": len(val_src), "test": len(test_src)},
        },
        "label_standardization": {"mean": label_mean, "std": label_std, "applied": config.standardize_labels},
        "steps_per_epoch": steps,
        "replicas": replicas,
        "versions": versions(),
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def test_and_report(run, model, best, parts, predict, results, say=print):
    """Scores validation and test with `predict(model, images)` and reports.

    Writes `test_predictions.csv` and `metrics.json` (`results` plus the
    metrics) into `run` (a `RunDir`), prints the summary table; returns the
    metrics dict.
    """
    _, val_src, test_src = parts

    def evaluate(part):
        if len(part) == 0:
            return {}, np.array([])
        predictions = predict(best, part.images)
        return iqa_metrics.all_metrics(predictions, part.scores), predictions

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", iqa_metrics.UndefinedMetricWarning)
        test_metrics, test_predictions = evaluate(test_src)
        val_metrics, _ = evaluate(val_src)
    run.write_predictions(test_src.names, test_src.scores, test_predictions)
    results = {"test": test_metrics, "validation": val_metrics, **results}
    run.write_metrics(results)

    rows = [
        [part, len(src), *(fmt_metric(m.get(name)) for name in ("srcc", "plcc", "krcc", "rmse"))]
        for part, src, m in (("validation", val_src, val_metrics), ("test", test_src, test_metrics))
    ]
    say("")
    say(summary_table(rows, ["split", "images", "SRCC", "PLCC", "KRCC", "RMSE"]))
    say("")
    say(f"best epoch: {results.get('best_epoch')} ({results.get('selection')}); wall time {results['wall_seconds']:.0f} s")
    if "error" in model.backbone_weights_info:
        say(f"note: backbone started from random weights ({model.backbone_weights_info['error']})")
    say(f"outputs: {os.path.abspath(run.path)}")
    return results
