"""What a training engine is: the part of a run that differs between Keras backends.

`keras_adtrs.training.run.run_training` is the one driver; an `Engine`
supplies the backend's share (see that module's docstring). This base is
one device training with `Model.fit`; `engine_tensorflow.TensorFlowEngine`
and `engine_jax.JaxEngine` override what their backend needs.
"""

import contextlib

import keras


def fit_epochs(model, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose):
    """Trains epochs `initial_epoch..epochs-1` with `Model.fit`, the first from step `initial_step`.

    `make_dataset(global_step)` returns the batches from that global step on.
    """
    history = keras.callbacks.History()
    callbacks = list(callbacks) + [history]
    if initial_step:
        # Finish the interrupted epoch (its logs cover the steps run now), then the rest.
        model.fit(make_dataset(initial_epoch * steps + initial_step), epochs=initial_epoch + 1,
                  initial_epoch=initial_epoch, steps_per_epoch=steps - initial_step, callbacks=callbacks,
                  shuffle=False, verbose=verbose)
        initial_epoch += 1
    if initial_epoch < epochs and not model.stop_training:
        model.fit(make_dataset(initial_epoch * steps), epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps, callbacks=callbacks, shuffle=False, verbose=verbose)
    return history



class Engine:
    """What differs between backends; this base is one device with `Model.fit` (see the module docstring)."""

    name = None
    replicas = 1
    chief = True
    worker_name = "0"
    direct_call = False
    keep_previous_checkpoint = False

    def check(self, config):
        """Raises `SettingError` for a setting this engine cannot honour."""

    def settings(self, config):
        """The settings as this engine runs them (what config.json records)."""
        return config

    def start(self, config):
        """Backend set-up before any model exists."""

    def record(self):
        """What config.json records about the engine."""
        return {"backend": self.name}

    def worker_run(self, run):
        return run

    def agree_on_state(self, state, checkpoint_dir, say):
        return state

    def scope(self):
        return contextlib.nullcontext()

    def compile_options(self, config):
        return {}

    def prepare(self, model, config):
        """After compile, before restoring a checkpoint."""

    def first_callbacks(self, model, steps, initial_global_step, config):
        return []

    def last_callbacks(self, run):
        return []

    def batches(self, train_src, config, steps, global_step):
        """The training batches from global step `global_step` on."""
        raise NotImplementedError

    def train(self, model, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose):
        return fit_epochs(model, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose)
