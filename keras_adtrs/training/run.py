"""The training run behind `python -m keras_adtrs.train` (and notebooks).

`run_training(TrainConfig(...))` loads a data set, splits it by group with a
seed, trains with the ADTRS objective while selecting the epoch on the
validation part (never the test part), scores the test part by averaging a
deterministic crop grid, exports a SavedModel and writes everything it did
into its output directory.
"""

import csv
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from typing import Optional

import numpy as np

DEFAULT_DATASET = "default"


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (written to config.json).

    `crop_size`, `crops_per_image`, `epochs` and `learning_rate` default to
    `None`, meaning "the data set's default" (see `resolve_defaults`).
    """

    dataset: str = DEFAULT_DATASET
    data_dir: Optional[str] = None
    manual_dir: Optional[str] = None
    csv: Optional[str] = None
    crop_size: Optional[int] = None
    crops_per_image: Optional[int] = None
    test_crops: int = 9
    batch_size: int = 16
    epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    learning_rate: Optional[float] = None
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    backbone: str = "resnet50"
    backbone_weights: Optional[str] = "imagenet"
    layer4_pooling: str = "global"
    batchnorm_momentum: float = 0.9
    standardize_labels: bool = True
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    seed: int = 0
    output_dir: Optional[str] = None
    strategy: str = "auto"
    jit_compile: bool = False
    mixed_precision: bool = False
    warmup_epochs: Optional[int] = None
    checkpoint_every_steps: Optional[int] = None
    export: bool = True
    verbose: int = 1


#: Settings tuned per data set for what the machine can do; user values win.
DATASET_DEFAULTS = {
    "default": {"crop_size": 64, "crops_per_image": 2, "epochs": 8, "learning_rate": 5e-4, "warmup_epochs": 3},
}
GENERIC_DEFAULTS = {"crop_size": 224, "crops_per_image": 25, "epochs": 10, "learning_rate": 1e-4, "warmup_epochs": 0}


def resolve_defaults(config):
    """Fills `None` settings with the data set's defaults; returns a new config."""
    defaults = DATASET_DEFAULTS.get(config.dataset, GENERIC_DEFAULTS)
    values = {k: (defaults[k] if getattr(config, k) is None else getattr(config, k)) for k in defaults}
    resolved = dataclasses.replace(config, **values)
    if resolved.output_dir is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        resolved = dataclasses.replace(resolved, output_dir=os.path.join("runs", f"{config.dataset}-{stamp}"))
    return resolved


def check_writable(directory):
    """Creates `directory` and proves it writable, before any training starts."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".write-test-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise SystemExit(f"error: output directory {directory!r} is not writable: {exc.strerror or exc}") from None


def versions():
    """Versions of what the run used (TensorFlow only if this process imported it)."""
    import keras
    import scipy

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "keras_adtrs": __import__("keras_adtrs").__version__,
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
    from keras_adtrs.data.splits import split_by_group

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


def build_model(config, label_mean, label_std):
    """`build_adtrs` with the run's settings."""
    import keras_adtrs

    return keras_adtrs.build_adtrs(
        crop_size=config.crop_size,
        backbone_weights=config.backbone_weights,
        backbone=config.backbone,
        layer4_pooling=config.layer4_pooling,
        batchnorm_momentum=config.batchnorm_momentum,
        score_scale=label_std if config.standardize_labels else 1.0,
        score_offset=label_mean if config.standardize_labels else 0.0,
        l2_weight_decay=config.weight_decay,
    )


def run_record(config, model, source, parts, label_mean, label_std, steps, replicas, **extra):
    """What config.json records about a run."""
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


def test_and_report(config, out_dir, model, best, parts, predict, results, say=print):
    """Scores validation and test with `predict(model, images)`, writes
    test_predictions.csv and metrics.json (`results` plus the metrics), prints
    the summary table; returns the metrics dict."""
    import warnings

    from keras_adtrs import metrics as iqa_metrics

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
    with open(os.path.join(out_dir, "test_predictions.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "score", "prediction"])
        for name, label, pred in zip(test_src.names, test_src.scores, test_predictions):
            writer.writerow([name, f"{label:.6g}", f"{pred:.6g}"])
    results = {"test": test_metrics, "validation": val_metrics, **results}
    _write_json(os.path.join(out_dir, "metrics.json"), results)

    rows = [
        [part, len(src), _fmt(m.get("srcc")), _fmt(m.get("plcc")), _fmt(m.get("krcc")), _fmt(m.get("rmse"))]
        for part, src, m in (("validation", val_src, val_metrics), ("test", test_src, test_metrics))
    ]
    say("")
    say(summary_table(rows, ["split", "images", "SRCC", "PLCC", "KRCC", "RMSE"]))
    say("")
    say(f"best epoch: {results.get('best_epoch')} ({results.get('selection')}); wall time {results['wall_seconds']:.0f} s")
    if "error" in model.backbone_weights_info:
        say(f"note: backbone started from random weights ({model.backbone_weights_info['error']})")
    say(f"outputs: {os.path.abspath(out_dir)}")
    return results


def _write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, default=_jsonable)
        handle.write("\n")
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _learning_rate(config, total_steps):
    import keras

    if config.lr_schedule == "constant":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(total_steps, 1), alpha=0.01)
    raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {config.lr_schedule!r}")


def choose_strategy(name):
    """`tf.distribute` strategy by name (see `keras_adtrs.training.distribute.choose_strategy`)."""
    from keras_adtrs.training.distribute import choose_strategy as choose

    return choose(name)


def summary_table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _fmt(value):
    return "nan" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def run_training(config: TrainConfig):
    """Runs one training job; returns the metrics dict (also in metrics.json)."""
    import keras

    from keras_adtrs.training import distribute, resume
    from keras_adtrs.training.callbacks import ObjectiveWarmup, ValidationMetrics
    from keras_adtrs.data.source import load_source
    from keras_adtrs.inference.scoring import score

    config = resolve_defaults(config)
    out_dir = config.output_dir
    check_writable(out_dir)
    started = time.time()
    # First TensorFlow work of the run: MultiWorkerMirroredStrategy must configure
    # the collective ops before the TensorFlow context starts.
    strategy = choose_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)

    say = print if config.verbose else (lambda *a, **k: None)
    source_kwargs = {"csv_path": config.csv} if config.csv else {}
    source = load_source(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir, **source_kwargs)
    split, train_src, val_src, test_src = split_parts(config, source, say)
    parts = (train_src, val_src, test_src)
    steps = training_steps(config, len(train_src))
    label_mean, label_std = label_statistics(config, train_src)
    chief = distribute.worker_role(strategy)[2]
    out_dir = distribute.worker_output_dir(out_dir, strategy)
    if not chief:
        check_writable(out_dir)
    if config.mixed_precision:
        # float16 compute, float32 variables; the score head and the losses stay float32.
        keras.mixed_precision.set_global_policy("mixed_float16")
    settings = dataclasses.asdict(config)
    state = resume.load_state(out_dir, settings)
    if distribute.is_multi_worker(strategy):
        # A kill can land between two workers' checkpoints: resume from the newest step all have.
        own = resume.global_step(state)
        agreed = distribute.workers_minimum(strategy, own)
        if agreed != own:
            say(f"worker checkpoint at step {own}, the slowest worker's at {agreed}: resuming from step {agreed}")
        state = resume.agree_on_state(state, agreed, out_dir)
    with strategy.scope():
        model = build_model(config, label_mean, label_std)
        optimizer = keras.optimizers.Adam(_learning_rate(config, steps * config.epochs))
        if config.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # --jit-compile: the whole step with one replica; with several, only the forward and
        # backward passes (XLA cannot compile the all-reduce on CPUs; see train_step_tensorflow).
        several = strategy.num_replicas_in_sync > 1
        model.compile(optimizer=optimizer, jit_compile=bool(config.jit_compile and not several))
        model.xla_gradients = bool(config.jit_compile and several)
        if state is not None:
            resume.restore(model, state, out_dir)
    if state is not None:
        say(f"resuming from epoch {state['epoch'] + 1}, step {state['step']} ({out_dir}/checkpoint)")

    run_config = run_record(
        config, model, source, parts, label_mean, label_std, steps, strategy.num_replicas_in_sync
    )
    if state is not None and os.path.isfile(os.path.join(out_dir, "config.json")):
        with open(os.path.join(out_dir, "config.json")) as handle:
            run_config["started"] = json.load(handle).get("started", run_config["started"])
        run_config["resumed"] = datetime.datetime.now().isoformat(timespec="seconds")
    _write_json(os.path.join(out_dir, "config.json"), run_config)
    _write_json(os.path.join(out_dir, "split.json"), split.to_json(source.names))

    total_steps = steps * config.epochs

    def make_dataset(global_step):
        return distribute.data_stream(train_src, config, steps, global_step, total_steps)

    model_path = os.path.join(out_dir, "model.keras")
    history_path = os.path.join(out_dir, "history.csv")
    # history.csv is rewritten from the checkpoint's rows: each finished epoch once.
    resume.write_history_csv(history_path, (state or {}).get("history", []))
    initial_epoch, initial_step = (state["epoch"], state["step"]) if state else (0, 0)
    sync = distribute.statistics_sync_callback(
        model, strategy, steps, initial_epoch * steps + initial_step, config.checkpoint_every_steps
    )
    callbacks = [sync] if sync is not None else []
    if config.warmup_epochs:
        callbacks.append(ObjectiveWarmup(config.warmup_epochs))
    has_validation = len(val_src) > 1
    best_checkpoint = None
    if has_validation:
        callbacks.append(
            ValidationMetrics(val_src.images, val_src.scores, crops=config.test_crops,
                              direct_call=strategy.num_replicas_in_sync > 1)
        )
        best_so_far = (state or {}).get("best_val_srcc")
        best_checkpoint = keras.callbacks.ModelCheckpoint(
            model_path, monitor="val_srcc", mode="max", save_best_only=True,
            initial_value_threshold=best_so_far,
        )
        callbacks.append(best_checkpoint)
    else:
        callbacks.append(keras.callbacks.ModelCheckpoint(model_path))
    checkpoint = resume.ResumeCheckpoint(
        out_dir, steps, settings, state=state, best_checkpoint=best_checkpoint,
        every_steps=config.checkpoint_every_steps, keep_previous=distribute.is_multi_worker(strategy),
    )
    callbacks += [checkpoint, keras.callbacks.CSVLogger(history_path, append=True)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False))
    steps_to_run = max(total_steps - (initial_epoch * steps + initial_step), 0)
    say(
        f"training {config.epochs} epoch(s) x {steps} steps, batch {config.batch_size}, "
        f"crop {config.crop_size}, {strategy.num_replicas_in_sync} replica(s), "
        f"backbone weights: {model.backbone_weights_info['source']}"
    )
    fit_started = time.time()
    if initial_epoch < config.epochs:
        distribute.train_epochs(
            model, strategy, make_dataset, steps, config.epochs, initial_epoch, initial_step, callbacks,
            verbose=(1 if sys.stdout.isatty() else 2) if config.verbose else 0,
        )
    train_seconds = time.time() - fit_started

    best_epoch = checkpoint.best_epoch() if has_validation else None
    if not chief:
        say(f"worker {distribute.worker_role(strategy)[:2]} done; the chief tests and exports")
        return {"best_epoch": best_epoch, "epochs": config.epochs, "worker": True}
    best = keras.saving.load_model(model_path)
    export_path = None
    if config.export:
        from keras_adtrs.serving.export import export_model

        export_path = export_model(best, os.path.join(out_dir, "export"), num_crops=config.test_crops)
    results = {
        "best_epoch": best_epoch,
        "epochs": config.epochs,
        "selection": "best validation SRCC" if has_validation else "last epoch (no validation part)",
        "warmup_epochs": config.warmup_epochs,
        "test_crops": config.test_crops,
        "backbone_weights": model.backbone_weights_info,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "train_crops_per_second": round(steps_to_run * config.batch_size / train_seconds, 2) if steps_to_run else None,
        "model": model_path,
        "export": export_path,
    }
    return test_and_report(
        config, out_dir, model, best, parts,
        lambda m, images: score(m, images, crops=config.test_crops), results, say,
    )


def run_repeated(config: TrainConfig, num_splits):
    """The field's protocol: train and test on `num_splits` seeded splits.

    Split `k` uses seed `config.seed + k` (split, crops and initialisation) and
    writes a full run into `OUTPUT_DIR/split-<k>/` (the epoch is always chosen
    on that split's validation part). `OUTPUT_DIR/protocol.json` keeps each
    split's test metrics and their median, mean, standard deviation, minimum
    and maximum; a table is printed.

    Returns:
        The protocol dict.
    """
    config = resolve_defaults(config)
    base = config.output_dir
    check_writable(base)
    runs = []
    for k in range(num_splits):
        run_config = dataclasses.replace(config, seed=config.seed + k, output_dir=os.path.join(base, f"split-{k}"))
        if config.verbose:
            print(f"\n=== split {k + 1} of {num_splits} (seed {run_config.seed}) ===")
        result = run_training(run_config)
        runs.append({"split": k, "seed": run_config.seed, "best_epoch": result.get("best_epoch"),
                     "test": result.get("test", {}), "validation": result.get("validation", {})})
    summary = {}
    for name in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
        values = np.array([r["test"].get(name, np.nan) for r in runs], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[name] = {
            "median": float(np.median(finite)) if finite.size else None,
            "mean": float(np.mean(finite)) if finite.size else None,
            "std": float(np.std(finite)) if finite.size else None,
            "min": float(np.min(finite)) if finite.size else None,
            "max": float(np.max(finite)) if finite.size else None,
            "undefined_splits": int(values.size - finite.size),
        }
    protocol = {"splits": num_splits, "dataset": config.dataset, "seeds": [r["seed"] for r in runs],
                "test": summary, "runs": runs}
    _write_json(os.path.join(base, "protocol.json"), protocol)
    if config.verbose:
        rows = [[name.upper(), *(_fmt(summary[name][k]) for k in ("median", "mean", "std", "min", "max"))]
                for name in ("srcc", "plcc", "krcc")]
        print(f"\ntest metrics over {num_splits} splits ({config.dataset})")
        print(summary_table(rows, ["metric", "median", "mean", "std", "min", "max"]))
        print(f"outputs: {os.path.abspath(base)}")
    return protocol
