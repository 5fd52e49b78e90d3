"""The training run on the JAX backend, without TensorFlow.

`run_training_jax(TrainConfig(...))` does what
`keras_adtrs.training.loop_tensorflow.run_training` does (load, seeded split
by group, train with the ADTRS objective selecting the epoch on validation
SRCC, score the test part by averaging the deterministic crop grid, write
config.json / split.json / metrics.json / history.csv / test_predictions.csv /
model.keras through `keras_adtrs.training.run_dir`), with the numpy input pipeline of
`keras_adtrs.data.pipeline_numpy` and Keras' JAX trainer. No module it uses
imports TensorFlow.

Differences from the TensorFlow run, by necessity:

- training crops come from numpy generators, not TensorFlow's stateless RNG
  (same rules, other draws); images are decoded with Pillow and cropped in
  numpy (`keras_adtrs.data.images`, `keras_adtrs.data.crops`: JPEG pixels may
  differ from TensorFlow's by a few levels), for training, validation and
  test alike;
- data sets: `default`, `live_challenge` (the release folder via
  `manual_dir`, read without TFDS: the same examples in the same order) and
  `csv` (the other public sets are TFDS builders, which need TensorFlow);
- the step is always jit-compiled (XLA), whatever `jit_compile` says;
  `strategy` is ignored (one device);
- no SavedModel export (that needs TensorFlow): `model.keras` loads under
  the TensorFlow backend, where `keras_adtrs.serving.export.export_model` exports it;
- no TensorBoard logs (the callback needs TensorFlow).

The Keras backend must be JAX before keras is first imported:
`python -m keras_adtrs.train --backend jax` sets it (and starts again on JAX
when keras was already imported on another backend).
"""

import dataclasses
import sys
import time

import keras
import numpy as np

from keras_adtrs.data.pipeline_numpy import TrainingCrops
from keras_adtrs.data.registry import load_source
from keras_adtrs.inference.scoring import score
from keras_adtrs.training.callbacks import ObjectiveWarmup, ValidationMetrics
from keras_adtrs.training.config import TrainConfig, resolve_defaults
from keras_adtrs.training.run import (
    build_model,
    label_statistics,
    learning_rate,
    require_precision,
    run_record,
    split_parts,
    test_and_report,
    training_steps,
)
from keras_adtrs.training.run_dir import RunDir


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch, and of the run's first step (which includes XLA compilation)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if not hasattr(self, "first_step"):
            self.first_step = time.time() - self._start

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.time() - self._start)


def run_training_jax(config: TrainConfig, source=None, extra_callbacks=()):
    """Runs one training job on the JAX backend; returns the metrics dict.

    Args:
        config: a `keras_adtrs.training.config.TrainConfig`.
        source: optional `IQASource` to use instead of loading `config.dataset`.
        extra_callbacks: more `keras.callbacks.Callback`s for `fit` (run
            after the run's own, so they see `val_srcc`).
    """
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"run_training_jax needs the JAX backend, but keras runs on {keras.backend.backend()!r}: "
            "set KERAS_BACKEND=jax before keras is imported"
        )
    # The JAX step is always jit-compiled: record what runs.
    config = dataclasses.replace(resolve_defaults(config), jit_compile=True)
    run = RunDir(config.output_dir)
    run.check_writable()
    started = time.time()
    require_precision(config)  # the model computes in it: fail now if this machine lacks it
    keras.utils.set_random_seed(config.seed)
    say = print if config.verbose else (lambda *a, **k: None)

    if source is None:
        source = load_source(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
                             csv_path=config.csv, tensorflow=False)
    split, train_src, val_src, test_src = split_parts(config, source, say)
    parts = (train_src, val_src, test_src)
    steps = training_steps(config, len(train_src))
    label_mean, label_std = label_statistics(config, train_src)
    model = build_model(config, label_mean, label_std)
    optimizer = keras.optimizers.Adam(learning_rate(config, steps * config.epochs))
    if config.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=True)

    run_config = run_record(
        config, model, source, parts, label_mean, label_std, steps, 1,
        backend="jax", pipeline="numpy (keras_adtrs.data.pipeline_numpy): PIL decoding, numpy RNG crops",
    )
    run.write_config(run_config)
    run.write_split(split, source.names)

    dataset = TrainingCrops(
        train_src.images,
        train_src.scores,
        config.crop_size,
        crops_per_image=config.crops_per_image,
        batch_size=config.batch_size,
        seed=config.seed,
        epochs=config.epochs,
        steps_per_epoch=steps,
    )
    model_path = run.model_path
    has_validation = len(val_src) > 1
    timing = EpochTimes()
    callbacks = [timing]
    if config.warmup_epochs:
        callbacks.append(ObjectiveWarmup(config.warmup_epochs))
    if has_validation:
        callbacks.append(ValidationMetrics(val_src.images, val_src.scores, crops=config.test_crops))
        callbacks.append(keras.callbacks.ModelCheckpoint(model_path, monitor="val_srcc", mode="max", save_best_only=True))
    else:
        callbacks.append(keras.callbacks.ModelCheckpoint(model_path))
    callbacks.append(keras.callbacks.CSVLogger(run.history_path))
    callbacks.extend(extra_callbacks)
    say(
        f"training {config.epochs} epoch(s) x {steps} steps, batch {config.batch_size}, "
        f"crop {config.crop_size}, backbone weights: {model.backbone_weights_info['source']} (JAX backend)"
    )
    fit_started = time.time()
    history = model.fit(
        dataset,
        epochs=config.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        shuffle=False,
        verbose=(1 if sys.stdout.isatty() else 2) if config.verbose else 0,
    )
    train_seconds = time.time() - fit_started

    best_epoch = None
    if has_validation:
        val_curve = history.history.get("val_srcc", [])
        best_epoch = int(np.argmax(val_curve)) + 1 if val_curve else None
    best = keras.saving.load_model(model_path)
    crops_per_epoch = steps * config.batch_size
    # Steady state: epochs after the first (which includes XLA compilation).
    later = timing.times[1:]
    steady = round(crops_per_epoch * len(later) / sum(later), 2) if later and sum(later) > 0 else None
    results = {
        "best_epoch": best_epoch,
        "epochs": config.epochs,
        "epochs_run": len(timing.times),
        "selection": "best validation SRCC" if has_validation else "last epoch (no validation part)",
        "warmup_epochs": config.warmup_epochs,
        "test_crops": config.test_crops,
        "backbone_weights": model.backbone_weights_info,
        "backend": "jax",
        "train_seconds": round(train_seconds, 1),
        "epoch_seconds": [round(t, 2) for t in timing.times],
        "first_step_seconds": round(getattr(timing, "first_step", float("nan")), 2),
        "wall_seconds": round(time.time() - started, 1),
        "train_crops_per_second": round(steps * config.epochs * config.batch_size / train_seconds, 2),
        "train_crops_per_second_after_first_epoch": steady,
        "model": model_path,
        "export": None,
        "export_note": "SavedModel export needs TensorFlow: load model.keras under KERAS_BACKEND=tensorflow "
        "and call keras_adtrs.serving.export.export_model",
    }
    return test_and_report(
        run, model, best, parts,
        lambda m, images: score(m, images, crops=config.test_crops, batch_size=config.score_batch_size), results, say,
    )
