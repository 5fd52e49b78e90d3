"""Checkpoints that let a killed training run resume where it stopped.

The run folder's checkpoint directory (`RunDir.checkpoint_dir`,
`RUN/checkpoint/`) holds `state.json` and one
`weights-<global step>.weights.h5` (model weights, optimizer state
and step counter, BatchNorm statistics). `ResumeCheckpoint` writes them at
each epoch end (and every N steps with `--checkpoint-every-steps`): first the
weights file under a new name, then `state.json` (written aside and renamed),
then the older weights file is removed, so a kill at any moment leaves a
consistent pair. `state.json` records the next epoch and step, the epoch
history rows (the source of `history.csv`, rewritten from them on resume so
every epoch appears once), the best validation SRCC so far (the threshold of
the best-model checkpoint) and the settings that must not change.

Multi-worker runs: every worker keeps its own checkpoint (in its own output
folder) and also the one before (`keep_previous`, recorded under
`state["previous"]`), because a kill can land after one worker saved an epoch
and before another did. On restart the workers agree on the newest step they
all have (`agree_on_state`) and resume from it, so they never start from
different steps.

A run that ends cleanly removes its checkpoint directory
(`RunDir.remove_checkpoint`, unless `--keep-checkpoint`).
"""

import json
import os

import keras

from keras_adtrs.errors import ResumeError

STATE_FILE = "state.json"
#: Settings a resumed run must share with the interrupted one.
FIXED_SETTINGS = ("dataset", "crop_size", "crops_per_image", "batch_size", "seed", "steps_per_epoch",
                  "learning_rate", "lr_schedule", "backbone", "layer4_pooling", "precision",
                  "test_fraction", "validation_fraction", "standardize_labels", "backbone_lr_ratio",
                  "freeze_batchnorm", "linear_probe_epochs")


def load_state(checkpoint_dir, settings=None, fixed=FIXED_SETTINGS):
    """The saved state of an interrupted run in `checkpoint_dir`, or None.

    Raises `ResumeError` when `settings` (a dict) differ from the saved run's
    in one of `fixed` (the training run's `FIXED_SETTINGS` by default).
    """
    path = os.path.join(checkpoint_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        state = json.load(handle)
    if settings is not None:
        changed = [
            f"{k}: {state['settings'].get(k)!r} -> {settings.get(k)!r}"
            for k in fixed
            if k in state.get("settings", {}) and state["settings"].get(k) != settings.get(k)
        ]
        if changed:
            raise ResumeError(
                f"{os.path.dirname(os.path.abspath(checkpoint_dir))!r} holds an interrupted run with other settings "
                f"({'; '.join(changed)}): run it again with the same settings, or choose another output folder"
            )
    return state


def global_step(state):
    """The global step a state resumes at (0 for no state)."""
    return int(state["global_step"]) if state else 0


def agree_on_state(state, agreed_step, checkpoint_dir):
    """The state to resume from once the workers agreed on `agreed_step`.

    Args:
        state: this worker's loaded state, or None.
        agreed_step: int. The smallest `global_step(state)` over the workers.
        checkpoint_dir: str. This worker's checkpoint folder (for the error message).

    Returns:
        `state` itself, its `previous` checkpoint, or None (start afresh).

    Raises:
        ResumeError: this worker has no checkpoint at `agreed_step`.
    """
    own = global_step(state)
    if own == agreed_step:
        return state
    if agreed_step == 0:
        return None
    previous = state.get("previous")
    if previous and int(previous["global_step"]) == agreed_step:
        return {**previous, "settings": state["settings"]}
    raise ResumeError(
        f"the workers cannot resume together: {checkpoint_dir} is at step {own} "
        f"and keeps no checkpoint of step {agreed_step}, where another worker stopped; "
        "start the run again in a new output folder"
    )


def restore(model, state, checkpoint_dir):
    """Loads the checkpointed weights and optimizer state into a compiled `model`.

    Call it under the strategy's scope: the optimizer's variables are built
    first so that they can receive the saved values.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(checkpoint_dir, state["weights"]))


def _checkpoint_entry(state):
    """A state without its `previous` entry and settings: what `previous` records."""
    return {k: v for k, v in state.items() if k not in ("previous", "settings")}


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ResumeCheckpoint(keras.callbacks.Callback):
    """Writes the resume state at each epoch end and every `every_steps` steps.

    Put it after the callbacks that add to or read the epoch logs
    (`ValidationMetrics`, the best-model `ModelCheckpoint`).

    Args:
        checkpoint_dir: str. The run's checkpoint folder (`RunDir.checkpoint_dir`).
        steps_per_epoch: int.
        settings: dict. The run's settings (the `FIXED_SETTINGS` are checked
            on resume).
        state: dict or None. The state resumed from.
        best_checkpoint: the best-model `ModelCheckpoint`, or None; its `best`
            is saved.
        every_steps: int or None. Also checkpoint every this many steps.
        keep_previous: bool. Also keep the checkpoint before the newest
            (multi-worker runs: see the module's docstring).
    """

    def __init__(self, checkpoint_dir, steps_per_epoch, settings, state=None, best_checkpoint=None, every_steps=None,
                 keep_previous=False):
        super().__init__()
        self.directory = os.fspath(checkpoint_dir)
        os.makedirs(self.directory, exist_ok=True)
        self.steps_per_epoch = int(steps_per_epoch)
        self.settings = settings
        self.best_checkpoint = best_checkpoint
        self.every_steps = int(every_steps) if every_steps else None
        state = state or {}
        self.history = list(state.get("history", []))
        self.best = state.get("best_val_srcc")
        self.global_step = int(state.get("epoch", 0)) * self.steps_per_epoch + int(state.get("step", 0))
        self.keep_previous = bool(keep_previous)
        self._last = _checkpoint_entry(state) or None

    def on_train_batch_end(self, batch, logs=None):
        self.global_step += 1
        within = self.global_step % self.steps_per_epoch
        if self.every_steps and within and within % self.every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        row.update({k: _float(v) for k, v in (logs or {}).items()})
        self.history = [r for r in self.history if r["epoch"] != int(epoch)] + [row]
        if self.best_checkpoint is not None and _float(self.best_checkpoint.best) is not None:
            best = float(self.best_checkpoint.best)
            self.best = best if abs(best) != float("inf") else None
        self.global_step = (int(epoch) + 1) * self.steps_per_epoch
        self.save()

    def best_epoch(self):
        """1-based epoch of the best `val_srcc` (first of ties), or None."""
        scored = [(r["epoch"], r.get("val_srcc")) for r in self.history if r.get("val_srcc") is not None]
        if not scored:
            return None
        best = max(v for _, v in scored)
        return min(e for e, v in scored if v == best) + 1

    def save(self):
        epoch, step = divmod(self.global_step, self.steps_per_epoch)
        name = f"weights-{self.global_step:09d}.weights.h5"
        self.model.save_weights(os.path.join(self.directory, name), overwrite=True)
        state = {
            "epoch": epoch,
            "step": step,
            "global_step": self.global_step,
            "weights": name,
            "best_val_srcc": self.best,
            "history": self.history,
            "settings": self.settings,
        }
        if self.keep_previous and self._last and self._last["global_step"] != self.global_step:
            state["previous"] = self._last
        path = os.path.join(self.directory, STATE_FILE)
        with open(path + ".tmp", "w") as handle:
            json.dump(state, handle, indent=1)
        os.replace(path + ".tmp", path)
        self._last = _checkpoint_entry(state)
        # Remove the weights files the new state no longer refers to.
        keep = {name, state.get("previous", {}).get("weights")}
        for stale in os.listdir(self.directory):
            if stale.startswith("weights-") and stale.endswith(".weights.h5") and stale not in keep:
                try:
                    os.remove(os.path.join(self.directory, stale))
                except OSError:
                    pass
