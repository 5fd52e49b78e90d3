"""The TensorFlow engine of a training run (TensorFlow-only module).

A `tf.distribute` strategy (`keras_adtrs.training.distribute`: one device,
MirroredStrategy over GPUs, MultiWorkerMirroredStrategy with `TF_CONFIG`),
the tf.data stream (`keras_adtrs.data.pipeline_tensorflow`: stateless
randomness, so a resumed run sees the batches an uninterrupted one would),
BatchNorm statistics kept identical across replicas, TensorBoard logs from
the chief. The driver is `keras_adtrs.training.run.run_training`.
"""

import keras

from keras_adtrs.training import distribute, resume
from keras_adtrs.training.engine import Engine


class TensorFlowEngine(Engine):
    """The TensorFlow backend's share of a training run."""

    name = "tensorflow"

    def start(self, config):
        # First TensorFlow work of the run: MultiWorkerMirroredStrategy must configure
        # the collective ops before the TensorFlow context starts.
        self.strategy = distribute.choose_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        task_type, task_id, self.chief = distribute.worker_role(self.strategy)
        self.worker_name = f"{task_type}-{task_id}"
        self.multi_worker = distribute.is_multi_worker(self.strategy)
        self.keep_previous_checkpoint = self.multi_worker
        # Scores by calling the model: predict_on_batch does not run under several replicas.
        self.direct_call = self.replicas > 1

    def record(self):
        return {"backend": self.name, "strategy": type(self.strategy).__name__}

    def worker_run(self, run):
        run = type(run)(distribute.worker_output_dir(run.path, self.strategy))
        if not self.chief:
            run.check_writable()
        return run

    def agree_on_state(self, state, checkpoint_dir, say):
        if not self.multi_worker:
            return state
        # A kill can land between two workers' checkpoints: resume from the newest step all have.
        own = resume.global_step(state)
        agreed = distribute.workers_minimum(self.strategy, own)
        if agreed != own:
            say(f"worker checkpoint at step {own}, the slowest worker's at {agreed}: resuming from step {agreed}")
        return resume.agree_on_state(state, agreed, checkpoint_dir)

    def scope(self):
        return self.strategy.scope()

    def compile_options(self, config):
        # --jit-compile: the whole step with one replica; with several, only the forward and
        # backward passes (XLA cannot compile the all-reduce on CPUs; see models/step_tensorflow.py).
        return {"jit_compile": bool(config.jit_compile and self.replicas == 1)}

    def prepare(self, model, config):
        model.xla_gradients = bool(config.jit_compile and self.replicas > 1)

    def first_callbacks(self, model, steps, initial_global_step, config):
        sync = distribute.statistics_sync_callback(model, self.strategy, steps, initial_global_step,
                                                   config.checkpoint_every_steps)
        return [sync] if sync is not None else []

    def last_callbacks(self, run):
        return [keras.callbacks.TensorBoard(run.logs_dir, write_graph=False)] if self.chief else []

    def batches(self, train_src, config, steps, global_step):
        return distribute.data_stream(train_src, config, steps, global_step, steps * config.epochs)

    def train(self, model, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose):
        if self.multi_worker:
            return distribute.custom_loop(model, self.strategy, make_dataset, steps, epochs, initial_epoch,
                                          initial_step, callbacks, verbose)
        return super().train(model, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose)
