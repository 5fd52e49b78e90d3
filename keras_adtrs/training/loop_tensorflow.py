"""The training run on the TensorFlow backend (TensorFlow-only module).

`run_training(TrainConfig(...))` loads a data set, splits it by group with a
seed, trains with the ADTRS objective on the tf.data pipeline (under a
`tf.distribute` strategy: `keras_adtrs.training.distribute`), selecting the
epoch on the validation part, checkpoints for resuming
(`keras_adtrs.training.resume`), scores the test part by averaging a
deterministic crop grid, exports a SavedModel and writes everything it did
into its run folder (`keras_adtrs.training.run_dir`). When the run ends
cleanly its resume checkpoint is removed, unless `keep_checkpoint`.
"""

import dataclasses
import datetime
import sys
import time

import keras

from keras_adtrs.data.registry import load_source
from keras_adtrs.inference.scoring import score
from keras_adtrs.serving.export import export_model
from keras_adtrs.training import distribute, resume
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


def run_training(config: TrainConfig):
    """Runs one training job; returns the metrics dict (also in metrics.json)."""
    config = resolve_defaults(config)
    run = RunDir(config.output_dir)
    run.check_writable()
    started = time.time()
    # First TensorFlow work of the run: MultiWorkerMirroredStrategy must configure
    # the collective ops before the TensorFlow context starts.
    strategy = distribute.choose_strategy(config.strategy)
    require_precision(config)  # the model computes in it: fail now if this machine lacks it
    keras.utils.set_random_seed(config.seed)

    say = print if config.verbose else (lambda *a, **k: None)
    source = load_source(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
                         csv_path=config.csv, tensorflow=True)
    split, train_src, val_src, test_src = split_parts(config, source, say)
    parts = (train_src, val_src, test_src)
    steps = training_steps(config, len(train_src))
    label_mean, label_std = label_statistics(config, train_src)
    chief = distribute.worker_role(strategy)[2]
    run = RunDir(distribute.worker_output_dir(run.path, strategy))
    if not chief:
        run.check_writable()
    settings = dataclasses.asdict(config)
    state = resume.load_state(run.checkpoint_dir, settings)
    if distribute.is_multi_worker(strategy):
        # A kill can land between two workers' checkpoints: resume from the newest step all have.
        own = resume.global_step(state)
        agreed = distribute.workers_minimum(strategy, own)
        if agreed != own:
            say(f"worker checkpoint at step {own}, the slowest worker's at {agreed}: resuming from step {agreed}")
        state = resume.agree_on_state(state, agreed, run.checkpoint_dir)
    with strategy.scope():
        model = build_model(config, label_mean, label_std)
        optimizer = keras.optimizers.Adam(learning_rate(config, steps * config.epochs))
        if config.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # --jit-compile: the whole step with one replica; with several, only the forward and
        # backward passes (XLA cannot compile the all-reduce on CPUs; see models/step_tensorflow.py).
        several = strategy.num_replicas_in_sync > 1
        model.compile(optimizer=optimizer, jit_compile=bool(config.jit_compile and not several))
        model.xla_gradients = bool(config.jit_compile and several)
        if state is not None:
            resume.restore(model, state, run.checkpoint_dir)
    if state is not None:
        say(f"resuming from epoch {state['epoch'] + 1}, step {state['step']} ({run.checkpoint_dir})")

    record = run_record(config, model, source, parts, label_mean, label_std, steps, strategy.num_replicas_in_sync)
    previous = run.read_config() if state is not None else None
    if previous is not None:
        record["started"] = previous.get("started", record["started"])
        record["resumed"] = datetime.datetime.now().isoformat(timespec="seconds")
    run.write_config(record)
    run.write_split(split, source.names)

    total_steps = steps * config.epochs

    def make_dataset(global_step):
        return distribute.data_stream(train_src, config, steps, global_step, total_steps)

    # history.csv is rewritten from the checkpoint's rows: each finished epoch once.
    run.write_history((state or {}).get("history", []))
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
            run.model_path, monitor="val_srcc", mode="max", save_best_only=True,
            initial_value_threshold=best_so_far,
        )
        callbacks.append(best_checkpoint)
    else:
        callbacks.append(keras.callbacks.ModelCheckpoint(run.model_path))
    checkpoint = resume.ResumeCheckpoint(
        run.checkpoint_dir, steps, settings, state=state, best_checkpoint=best_checkpoint,
        every_steps=config.checkpoint_every_steps, keep_previous=distribute.is_multi_worker(strategy),
    )
    callbacks += [checkpoint, keras.callbacks.CSVLogger(run.history_path, append=True)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(run.logs_dir, write_graph=False))
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
        _finish(config, run)
        return {"best_epoch": best_epoch, "epochs": config.epochs, "worker": True}
    best = keras.saving.load_model(run.model_path)
    export_path = None
    if config.export:
        export_path = export_model(best, run.export_dir, num_crops=config.test_crops)
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
        "model": run.model_path,
        "export": export_path,
    }
    results = test_and_report(
        run, model, best, parts,
        lambda m, images: score(m, images, crops=config.test_crops, batch_size=config.score_batch_size),
        results, say,
    )
    _finish(config, run)
    return results


def _finish(config, run):
    """The run ended cleanly: its resume checkpoint goes, as `keras.callbacks.BackupAndRestore` does."""
    if not config.keep_checkpoint:
        run.remove_checkpoint()
