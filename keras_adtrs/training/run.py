"""The training run: one driver for both Keras backends.

`run_training(TrainConfig(...))` loads a data set, splits it by group with a
seed, builds the model from the run's settings, trains with the ADTRS
objective while selecting the epoch on the validation part (never the test
part), checkpoints for resuming (`keras_adtrs.training.resume`), scores the
test part by averaging a deterministic crop grid and writes everything into
the run folder (`keras_adtrs.training.run_dir`). When the run ends cleanly its
resume checkpoint is removed, unless `keep_checkpoint`.

What differs between the backends is an engine (`make_engine`), and only it:

- `keras_adtrs.training.engine_tensorflow.TensorFlowEngine`: a
  `tf.distribute` strategy (one device, mirrored GPUs, multi-worker), the
  tf.data stream, TensorBoard logs;
- `keras_adtrs.training.engine_jax.JaxEngine`: one device, the numpy
  stream (`keras_adtrs.data.pipeline_numpy`), the step always compiled with
  XLA; no module it uses imports TensorFlow.

Resume, the checkpoint settings, progress, validation, the run-folder files
and the result are the driver's, the same on both. A setting an engine
cannot honour is refused by name (`SettingError`), never ignored. The
SavedModel export is the train command's (`keras_adtrs.train`).
"""

import dataclasses
import datetime
import os
import platform
import sys
import time
import warnings

import keras
import numpy as np
import scipy

from keras_adtrs import metrics as iqa_metrics
from keras_adtrs.data.registry import load_source
from keras_adtrs.data.splits import split_by_group
from keras_adtrs.errors import SettingError
from keras_adtrs.models.factory import build_adtrs
from keras_adtrs.models.fine_tuning import LinearProbeStage, PartwiseAdam
from keras_adtrs.models.precision import check_precision, choose_precision
from keras_adtrs.models.scoring import score
from keras_adtrs.reporting import fmt_metric, summary_table
from keras_adtrs.training import resume
from keras_adtrs.training.callbacks import ObjectiveWarmup, ValidationMetrics
from keras_adtrs.training.config import TrainConfig, check_train_config, parse_loss_weights, resolve_defaults

from keras_adtrs.training.run_dir import RunDir
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


def make_engine(config):
    """The engine of the Keras backend in use (`keras.backend.backend()`), checked against `config`."""
    backend = keras.backend.backend()
    if config.backend not in (None, backend):
        raise SettingError("backend", f"is {config.backend!r} but Keras runs on {backend!r}: set KERAS_BACKEND "
                           "before keras is imported (the train command does)")
    if backend == "tensorflow":
        from keras_adtrs.training.engine_tensorflow import TensorFlowEngine

        engine = TensorFlowEngine()
    elif backend == "jax":
        from keras_adtrs.training.engine_jax import JaxEngine

        engine = JaxEngine()
    else:
        raise SettingError("backend", f"training runs on tensorflow or jax, not {backend!r}")
    engine.check(config)
    return engine


def split_parts(config, source, say=print, split=None):
    """The seeded split of `source` (or the given `Split`): `(split, train, validation, test)` sources."""
    if split is None:
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
    """Steps per epoch.

    Raises:
        SettingError: not one batch fits the training part.
    """
    steps = config.steps_per_epoch or (num_train * config.crops_per_image) // config.batch_size
    if steps < 1:
        raise SettingError(
            "batch_size", f"{config.batch_size} is more than the {num_train} training images x "
            f"{config.crops_per_image} crops per image"
        )
    return steps


def label_statistics(config, train_src):
    """`(mean, std)` of the training labels that `ScoreAffine` maps back to."""
    mean = float(np.mean(train_src.scores))
    std = float(np.std(train_src.scores)) or 1.0
    return mean, std


def build_model(config, label_mean, label_std):
    """`build_adtrs` with the run's settings."""
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
    raise SettingError("lr_schedule", f"must be 'cosine' or 'constant', got {config.lr_schedule!r}")


def make_optimizer(config, total_steps):
    """Adam with the run's learning rate and backbone ratio (loss-scaled under mixed_float16)."""
    optimizer = PartwiseAdam(learning_rate=learning_rate(config, total_steps),
                             backbone_lr_ratio=config.backbone_lr_ratio)
    if config.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def run_record(config, model, source, parts, label_mean, label_std, steps, engine, **extra):
    """What config.json records about a run (written by `RunDir.write_config`)."""
    train_src, val_src, test_src = parts
    return {
        "settings": dataclasses.asdict(config),
        **engine.record(),
        **extra,
        "backbone_weights": model.backbone_weights_info,
        "precision": {"requested": config.precision, "computes_in": model.precision,
                      "chosen_by": choose_precision(config.precision)[1]},
        "fine_tuning": dict(model.fine_tuning),
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
        "replicas": engine.replicas,
        "versions": versions(),
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch, and of the run's first step (which includes tracing or XLA compilation)."""

    def __init__(self):
        super().__init__()
        self.times = []
        self.first_step = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step = time.time() - self._start

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.time() - self._start)


class StopAfterEpochs(keras.callbacks.Callback):
    """Stops training once `epochs` epochs have finished (the schedule stays that of the whole run)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


class EpochPredictions(keras.callbacks.Callback):
    """Writes the test part's scores after every epoch (`RUN/test_predictions_by_epoch.csv`).

    Reads `ValidationMetrics(prefix="test")`'s predictions; a resumed run keeps
    the columns its earlier epochs wrote.
    """

    def __init__(self, run, part, scorer):
        super().__init__()
        self.run, self.part, self.scorer = run, part, scorer

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.scorer.predictions:
            self.run.write_epoch_predictions(self.part.names, self.part.scores, {epoch: self.scorer.predictions[epoch]})


def run_training(config: TrainConfig, source=None, split=None, extra_callbacks=(), score_test_each_epoch=False):
    """Runs one training job; returns the metrics dict (also in metrics.json).

    Args:
        config: a `TrainConfig`.
        source: optional `IQASource` to use instead of loading `config.dataset`.
        split: optional `Split` of `source` to use instead of the seeded one
            (the K-fold protocol passes each fold's).
        extra_callbacks: more `keras.callbacks.Callback`s for `fit` (run
            after the run's own, so they see `val_srcc`).
        score_test_each_epoch: bool. Also score the test part after every
            epoch (`test_srcc` in history.csv, the scores in
            `test_predictions_by_epoch.csv`); the epoch is still selected on
            validation. Defaults to `False`.

    Raises:
        SettingError: a setting is out of range, or the backend cannot
            honour it.
        ResumeError: the run folder holds another run's checkpoint.
        OutputDirError: the run folder cannot be written.
    """
    config = check_train_config(resolve_defaults(config))
    engine = make_engine(config)
    config = engine.settings(config)
    run = RunDir(config.output_dir)
    run.check_writable()
    started = time.time()
    engine.start(config)
    check_precision(config.precision)  # the model computes in it: fail now if this machine lacks it
    keras.utils.set_random_seed(config.seed)
    say = print if config.verbose else (lambda *a, **k: None)
    chosen_by = choose_precision(config.precision)[1]
    if chosen_by:
        say(f"precision {chosen_by}")

    if source is None:
        source = load_source(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
                             csv_path=config.csv)
    split, train_src, val_src, test_src = split_parts(config, source, say, split)
    parts = (train_src, val_src, test_src)
    steps = training_steps(config, len(train_src))
    label_mean, label_std = label_statistics(config, train_src)
    run = engine.worker_run(run)
    settings = dataclasses.asdict(config)
    state = engine.agree_on_state(resume.load_state(run.checkpoint_dir, settings), run.checkpoint_dir, say)
    total_steps = steps * config.epochs
    with engine.scope():
        model = build_model(config, label_mean, label_std)
        model.compile(optimizer=make_optimizer(config, total_steps), backbone_lr_ratio=config.backbone_lr_ratio,
                      freeze_batchnorm=config.freeze_batchnorm, linear_probe_epochs=config.linear_probe_epochs,
                      **engine.compile_options(config))
        engine.prepare(model, config)
        if state is not None:
            resume.restore(model, state, run.checkpoint_dir)
    if state is not None:
        say(f"resuming from epoch {state['epoch'] + 1}, step {state['step']} ({run.checkpoint_dir})")

    record = run_record(config, model, source, parts, label_mean, label_std, steps, engine)
    previous = run.read_config() if state is not None else None
    if previous is not None:
        record["started"] = previous.get("started", record["started"])
        record["resumed"] = datetime.datetime.now().isoformat(timespec="seconds")
    run.write_config(record)
    run.write_split(split, source.names)
    # history.csv is rewritten from the checkpoint's rows: each finished epoch once.
    run.write_history((state or {}).get("history", []))
    initial_epoch, initial_step = (state["epoch"], state["step"]) if state else (0, 0)
    initial_global_step = initial_epoch * steps + initial_step

    callbacks = list(engine.first_callbacks(model, steps, initial_global_step, config))
    timing = EpochTimes()
    callbacks.append(timing)
    if config.linear_probe_epochs:
        callbacks.append(LinearProbeStage(config.linear_probe_epochs))
    if config.warmup_epochs:
        callbacks.append(ObjectiveWarmup(config.warmup_epochs))
    has_validation = len(val_src) > 1
    best_checkpoint = None
    if has_validation:
        callbacks.append(ValidationMetrics(val_src.images, val_src.scores, crops=config.test_crops,
                                           batch_size=config.score_batch_size, direct_call=engine.direct_call))
    if score_test_each_epoch and len(test_src):
        test_scorer = ValidationMetrics(test_src.images, test_src.scores, crops=config.test_crops,
                                        batch_size=config.score_batch_size, direct_call=engine.direct_call,
                                        prefix="test")
        callbacks += [test_scorer, EpochPredictions(run, test_src, test_scorer)]
    if has_validation:
        best_checkpoint = keras.callbacks.ModelCheckpoint(
            run.model_path, monitor="val_srcc", mode="max", save_best_only=True,
            initial_value_threshold=(state or {}).get("best_val_srcc"),
        )
        callbacks.append(best_checkpoint)
    else:
        callbacks.append(keras.callbacks.ModelCheckpoint(run.model_path))
    checkpoint = resume.ResumeCheckpoint(
        run.checkpoint_dir, steps, settings, state=state, best_checkpoint=best_checkpoint,
        every_steps=config.checkpoint_every_steps, keep_previous=engine.keep_previous_checkpoint,
    )
    callbacks += [checkpoint, keras.callbacks.CSVLogger(run.history_path, append=True)]
    callbacks += list(engine.last_callbacks(run))
    callbacks += list(extra_callbacks)
    say(
        f"training {config.epochs} epoch(s) x {steps} steps, batch {config.batch_size}, "
        f"crop {config.crop_size}, {engine.replicas} replica(s), backbone weights: "
        f"{model.backbone_weights_info['source']} ({engine.name} backend)"
    )
    fit_started = time.time()
    if initial_epoch < config.epochs:
        engine.train(
            model, lambda global_step: engine.batches(train_src, config, steps, global_step), steps, config.epochs,
            initial_epoch, initial_step, callbacks, verbose=(1 if sys.stdout.isatty() else 2) if config.verbose else 0,
        )
    train_seconds = time.time() - fit_started
    epochs_run = len(timing.times)
    steps_run = max(epochs_run * steps - initial_step, 0) if epochs_run else 0

    best_epoch = checkpoint.best_epoch() if has_validation else None
    if not engine.chief:
        say(f"worker {engine.worker_name} done; the chief tests and exports")
        _finish(config, run)
        return {"best_epoch": best_epoch, "epochs": config.epochs, "worker": True}
    best = keras.saving.load_model(run.model_path)
    # Steady state: the epochs after the first (which includes tracing or compilation).
    later = timing.times[1:]
    results = {
        "best_epoch": best_epoch,
        "epochs": config.epochs,
        "epochs_run": epochs_run,
        "selection": "best validation SRCC" if has_validation else "last epoch (no validation part)",
        "warmup_epochs": config.warmup_epochs,
        "linear_probe_epochs": config.linear_probe_epochs,
        "test_crops": config.test_crops,
        "backbone_weights": model.backbone_weights_info,
        "backend": engine.name,
        "train_seconds": round(train_seconds, 1),
        "epoch_seconds": [round(t, 2) for t in timing.times],
        "first_step_seconds": round(timing.first_step, 2) if timing.first_step is not None else None,
        "wall_seconds": round(time.time() - started, 1),
        "train_crops_per_second": round(steps_run * config.batch_size / train_seconds, 2) if steps_run else None,
        "train_crops_per_second_after_first_epoch": (
            round(steps * config.batch_size * len(later) / sum(later), 2) if later and sum(later) > 0 else None),
        "model": run.model_path,
        "export": None,
    }
    results = test_and_report(
        run, model, best, parts,
        lambda m, images: score(m, images, crops=config.test_crops, batch_size=config.score_batch_size), results, say,
    )
    _finish(config, run)
    return results


def _finish(config, run):
    """The run ended cleanly: its resume checkpoint goes, as `keras.callbacks.BackupAndRestore` does."""
    if not config.keep_checkpoint:
        run.remove_checkpoint()


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
