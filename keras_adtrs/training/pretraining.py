"""Quality-aware pre-training without human scores: the run behind `python -m keras_adtrs.pretrain`.

`run_pretraining(PretrainConfig(...))` reads unlabelled images (folders of
photos, or the default set's procedural generator with seeds the default set
does not use), trains the ADTRS network (backbone and attention block) on
graded synthetic distortions of them (`keras_adtrs.data.pretraining`,
`keras_adtrs.models.pretraining`) and writes a run folder as `train` does
(`keras_adtrs.training.run_dir`):

```
RUN/
  config.json    every setting, the images used and skipped, versions, the command
  history.csv    one row per epoch (`steps_per_epoch` steps): the loss and each term
  metrics.json   steps, crops, wall time, crops/s, the last epoch's losses
  model.keras    the pre-trained ADTRS model (saved at each epoch end): pass it to
                 `python -m keras_adtrs.train --init-from`
  checkpoint/    resume state while the run is unfinished (removed when it ends cleanly)
```

A killed run resumes from its last checkpoint when the same command is run
again: batch `i` depends only on `(seed, i)`, so the resumed run sees the
batches the uninterrupted one would have seen. Runs on the TensorFlow and the
JAX backend (the input pipeline is numpy).
"""

import dataclasses
import datetime
import os
import sys
import time

import keras

from keras_adtrs.data import distortions
from keras_adtrs.errors import SettingError
from keras_adtrs.data.pretraining import (
    DistortionBatches,
    load_reference_images,
    num_classes,
    procedural_references,
)
from keras_adtrs.models.backbone import ADTRSBackbone, validate_crop_size
from keras_adtrs.models.precision import check_precision
from keras_adtrs.models.pretraining import PretrainingModel, parse_objective
from keras_adtrs.training import resume
from keras_adtrs.training.config import PretrainConfig
from keras_adtrs.training.run import learning_rate, versions
from keras_adtrs.training.run_dir import RunDir, default_path

#: Settings a resumed pre-training run must share with the interrupted one.
FIXED_SETTINGS = ("images", "procedural_references", "kinds", "objective", "crop_size", "groups", "levels",
                  "steps", "steps_per_epoch", "learning_rate", "lr_schedule", "seed", "backbone", "precision")


def parse_kinds(kinds):
    """`"all"` or comma-separated names -> a tuple of distortion names."""
    if kinds in (None, "", "all"):
        return distortions.KINDS
    return distortions.check_kinds(k.strip() for k in str(kinds).split(",") if k.strip())


def check_config(config):
    """Validates the settings before any work; returns the config with its output folder filled in.

    Raises:
        SettingError: a setting is out of range (the message names it).
    """
    validate_crop_size(config.crop_size)
    try:
        parse_objective(config.objective)
    except ValueError as exc:
        raise SettingError("objective", str(exc)) from None
    try:
        parse_kinds(config.kinds)
    except ValueError as exc:
        raise SettingError("kinds", str(exc)) from None
    for name, low in (("steps", 1), ("steps_per_epoch", 1), ("groups", 1), ("procedural_references", 1)):
        if getattr(config, name) < low:
            raise SettingError(name, f"must be at least {low}, got {getattr(config, name)}")
    if not 2 <= config.levels <= distortions.NUM_LEVELS + 1:
        raise SettingError("levels", f"must be 2..{distortions.NUM_LEVELS + 1}, got {config.levels}")
    if not config.learning_rate > 0:
        raise SettingError("learning_rate", f"must be positive, got {config.learning_rate}")
    if config.output_dir is None:
        config = dataclasses.replace(config, output_dir=default_path("pretrain"))
    return config


class _EpochFiles(keras.callbacks.Callback):
    """At each epoch end: `history.csv` from the checkpoint's rows, and `model.keras` (the ADTRS model).

    The model is written aside and renamed, so a kill never leaves half a file.
    """

    def __init__(self, run, checkpoint):
        super().__init__()
        self.run, self.checkpoint = run, checkpoint

    def on_epoch_end(self, epoch, logs=None):
        self.run.write_history(self.checkpoint.history)
        tmp = self.run.model_path + ".tmp.keras"
        self.model.adtrs.save(tmp)
        os.replace(tmp, self.run.model_path)


def _references(config, say):
    if config.images:
        say(f"reading images from {', '.join(config.images)}")
        try:
            references, report = load_reference_images(config.images, config.crop_size, progress=bool(config.verbose))
        except (FileNotFoundError, ValueError) as exc:
            raise SettingError("images", str(exc)) from None
        for path, reason in report["skipped"].items():
            say(f"skipped {path}: {reason}")
        say(f"{len(report['files'])} images ({report['arrays']} arrays at several scales), "
            f"{len(report['skipped'])} skipped")
        return references, {"source": "folders", **report}
    say(f"drawing {config.procedural_references} procedural references (seed {config.seed})")
    references = procedural_references(config.procedural_references, seed=config.seed)
    return references, {"source": "procedural", "count": len(references),
                        "note": "the default set's generator with seeds the default set does not use"}


def run_pretraining(config: PretrainConfig):
    """Runs one pre-training job; returns the metrics dict (also in metrics.json)."""
    config = check_config(config)
    run = RunDir(config.output_dir)
    run.check_writable()
    precision = check_precision(config.precision)  # the model computes in it: fail now if this machine lacks it
    started = time.time()
    say = print if config.verbose else (lambda *a, **k: None)
    keras.utils.set_random_seed(config.seed)
    kinds = parse_kinds(config.kinds)
    settings = dataclasses.asdict(config)
    state = resume.load_state(run.checkpoint_dir, settings, fixed=FIXED_SETTINGS)
    references, images_report = _references(config, say)

    model = PretrainingModel(
        ADTRSBackbone(crop_size=config.crop_size, architecture=config.backbone,
                      batchnorm_momentum=config.batchnorm_momentum, precision=precision),
        num_classes=num_classes(kinds),
        group_size=config.levels,
        objective=config.objective,
    )
    per_epoch = min(config.steps_per_epoch, config.steps)
    epochs = -(-config.steps // per_epoch)  # the last epoch is a whole one: steps round up to it
    optimizer = keras.optimizers.Adam(learning_rate(config, epochs * per_epoch))
    if config.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=keras.backend.backend() == "jax")
    if state is not None:
        resume.restore(model, state, run.checkpoint_dir)
        say(f"resuming from step {state['global_step']} ({run.checkpoint_dir})")

    record = {
        "settings": settings,
        "kinds": list(kinds),
        "images": images_report,
        "model": model.get_config(),
        "batch_size": config.groups * config.levels,
        "versions": versions(),
        "command": " ".join(sys.argv),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    previous = run.read_config() if state is not None else None
    if previous is not None:
        record["started"] = previous.get("started", record["started"])
        record["resumed"] = datetime.datetime.now().isoformat(timespec="seconds")
    run.write_config(record)
    run.write_history((state or {}).get("history", []))

    done = resume.global_step(state)
    checkpoint = resume.ResumeCheckpoint(run.checkpoint_dir, per_epoch, settings, state=state,
                                         every_steps=config.checkpoint_every_steps)
    callbacks = [checkpoint, _EpochFiles(run, checkpoint)]
    batch_size = config.groups * config.levels
    say(f"pre-training {config.steps} steps of {config.groups} groups x {config.levels} levels "
        f"({batch_size} crops), crop {config.crop_size}, objective {config.objective}, "
        f"{len(kinds)} distortions, {precision}" + (" (auto)" if config.precision == "auto" else "")
        + f", backend {keras.backend.backend()}")

    def batches(first_step):
        return DistortionBatches(references, config.crop_size, kinds, config.groups, config.levels,
                                 steps=epochs * per_epoch, seed=config.seed, initial_step=first_step,
                                 with_fr="fr" in parse_objective(config.objective), workers=2)

    verbose = (1 if sys.stdout.isatty() else 2) if config.verbose else 0
    fit_started = time.time()
    epoch, step = divmod(done, per_epoch)
    if step:  # finish the interrupted epoch (its logs cover the steps run now), then the rest
        model.fit(batches(done), epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=per_epoch - step,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
        epoch += 1
    if epoch < epochs:
        model.fit(batches(epoch * per_epoch), epochs=epochs, initial_epoch=epoch, steps_per_epoch=per_epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    train_seconds = time.time() - fit_started
    steps_run = epochs * per_epoch - done
    history = checkpoint.history
    results = {
        "steps": epochs * per_epoch,
        "steps_run": steps_run,
        "crops": epochs * per_epoch * batch_size,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "train_crops_per_second": round(steps_run * batch_size / train_seconds, 2) if steps_run else None,
        "last_epoch": history[-1] if history else None,
        "model": run.model_path,
    }
    run.write_metrics(results)
    if not config.keep_checkpoint:
        run.remove_checkpoint()
    say(f"pre-trained {results['steps']} steps in {results['train_seconds']:.0f} s; "
        f"last epoch: " + ", ".join(f"{k} {v:.4f}" for k, v in (results["last_epoch"] or {}).items()
                                     if k != "epoch" and isinstance(v, float)))
    say(f"model: {os.path.abspath(run.model_path)}")
    say(f"fine-tune it: python -m keras_adtrs.train --init-from {run.model_path} ...")
    return results
