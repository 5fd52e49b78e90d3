"""Training on several devices and machines (TensorFlow-only module).

- `choose_strategy(name)`: `auto` (MirroredStrategy when more than one GPU is
  visible, the default one-device strategy otherwise), `none`, `mirrored`,
  `multiworker` (MultiWorkerMirroredStrategy configured by `TF_CONFIG`).
- `train_epochs(...)`: runs the epochs of a training run. One device and
  MirroredStrategy use `Model.fit`; MultiWorkerMirroredStrategy uses
  `custom_loop`, because Keras 3's `fit` fails under it
  (keras-team/keras#20585: "Attempt to convert a value (PerReplica...)").
  The custom loop runs the same step (`keras_adtrs.models.step_tensorflow.apply_step`) in
  `strategy.run` on a `tf.function` over a distributed dataset and drives the
  same callbacks (validation metrics, checkpoints, history CSV, progress).

Under every strategy each replica computes the objective on its own part of
the global batch; see docs/distributed.md.
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

from keras_adtrs import console
from keras_adtrs.defaults import STRATEGIES
from keras_adtrs.errors import SettingError
from keras_adtrs.data.pipeline_tensorflow import steps_per_epoch as count_steps
from keras_adtrs.data.pipeline_tensorflow import training_dataset
from keras_adtrs.models.objective import LOSS_TERM_NAMES
from keras_adtrs.models.step_tensorflow import apply_step


def choose_strategy(name):
    """`tf.distribute` strategy by name: auto, none, mirrored or multiworker."""
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise SettingError("strategy", "multiworker needs TF_CONFIG (see docs/distributed.md)")
        # Its collective-ops set-up logs through absl before TF_CPP_MIN_LOG_LEVEL applies.
        with contextlib.nullcontext() if console.verbose_requested() else console.stderr_silenced():
            return tf.distribute.MultiWorkerMirroredStrategy()
    raise SettingError("strategy", f"must be one of {', '.join(STRATEGIES)}, got {name!r}")


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_role(strategy):
    """`(task_type, task_id, is_chief)`; `(None, 0, True)` outside multi-worker training."""
    if not is_multi_worker(strategy):
        return None, 0, True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return task_type, int(task_id or 0), chief


def worker_output_dir(out_dir, strategy):
    """The chief writes into `out_dir`; other workers into `out_dir/worker-<id>`.

    Every worker must save checkpoints at the same moments (saving reads
    variables that are synchronised across workers), so the other workers
    save their own copies there (also what they resume from).
    """
    task_type, task_id, chief = worker_role(strategy)
    if chief:
        return out_dir
    return os.path.join(out_dir, f"{task_type}-{task_id}")


def workers_minimum(strategy, value):
    """The smallest of every worker's integer `value` (`value` itself outside multi-worker training)."""
    if not is_multi_worker(strategy):
        return int(value)
    local = tf.constant([int(value)], tf.int64)

    @tf.function
    def gather():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_gather(local, axis=0))

    values = strategy.experimental_local_results(gather())[0]
    return int(tf.reduce_min(values))


# ------------------------------------------------------------- the data stream
def data_stream(train_src, config, steps, global_step, total_steps):
    """The training batches from global step `global_step` on.

    Batches form one stream of data epochs (`keras_adtrs.data.pipeline_tensorflow`: stateless
    randomness from (seed, epoch, image, crop)); training epoch `e` takes the
    batches `e * steps ... (e + 1) * steps - 1` of it. Starting at any global
    step yields exactly the batches an uninterrupted run sees there.
    """
    per_data_epoch = count_steps(len(train_src), config.crops_per_image, config.batch_size)
    data_epoch, within = divmod(int(global_step), per_data_epoch)
    end = -(-int(total_steps) // per_data_epoch) + 1
    dataset = training_dataset(
        train_src.images,
        train_src.scores,
        config.crop_size,
        crops_per_image=config.crops_per_image,
        batch_size=config.batch_size,
        seed=config.seed,
        initial_epoch=data_epoch,
        epochs=max(end, data_epoch + 1),
    )
    return dataset.skip(within) if within else dataset


# ------------------------------------------------------------ the epoch driver
def train_epochs(model, strategy, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose):
    """Trains epochs `initial_epoch..epochs-1`, the first from step `initial_step`.

    `make_dataset(global_step)` returns the batches from that global step on.
    Returns the list of epoch logs (dicts) of the epochs run here.
    """
    if is_multi_worker(strategy):
        return custom_loop(model, strategy, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks,
                           verbose)
    history = keras.callbacks.History()
    callbacks = list(callbacks) + [history]
    if initial_step:
        # Finish the interrupted epoch (its logs cover the steps run now), then the rest.
        dataset = make_dataset(initial_epoch * steps + initial_step)
        model.fit(dataset, epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                  steps_per_epoch=steps - initial_step, callbacks=callbacks, shuffle=False, verbose=verbose)
        initial_epoch += 1
    if initial_epoch < epochs:
        dataset = make_dataset(initial_epoch * steps)
        model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  callbacks=callbacks, shuffle=False, verbose=verbose)
    return history


def custom_loop(model, strategy, make_dataset, steps, epochs, initial_epoch, initial_step, callbacks, verbose):
    """The multi-worker training loop: `strategy.run` on a `tf.function` step.

    Each worker reads the whole global batch stream and keeps its own replicas'
    slices of every global batch (so the replicas together see exactly the
    global batch `fit` would see on one device). The step is
    `keras_adtrs.models.step_tensorflow.apply_step`; the per-term losses are summed over
    replicas weighted by their batch sizes and averaged over the epoch, as the
    model's Mean trackers do under `fit`. XLA (`--jit-compile`) compiles the
    forward and backward passes only (`model.xla_gradients`): the step's
    all-reduce cannot be compiled on CPUs.
    """
    names = ("loss",) + LOSS_TERM_NAMES
    replicas = strategy.num_replicas_in_sync

    def distributed(global_step):
        dataset = make_dataset(global_step)
        batch = dataset.element_spec[1].shape[0]
        if batch is None or batch % replicas:
            raise SettingError("batch_size", f"({batch}) must be a multiple of the {replicas} replicas")
        per_replica = batch // replicas

        def dataset_fn(context):
            # This worker's replicas take consecutive slices of every global batch.
            local = replicas // context.num_input_pipelines
            start, size = context.input_pipeline_id * local * per_replica, local * per_replica
            ds = dataset.map(lambda images, labels: (images[start : start + size], labels[start : start + size]))
            if local > 1:
                ds = ds.unbatch().batch(per_replica, drop_remainder=True)
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return ds.with_options(options)

        return iter(strategy.distribute_datasets_from_function(dataset_fn))

    def replica_step(data):
        terms, size = apply_step(model, data)
        size = tf.cast(size, tf.float32)
        sums = {"loss": terms["total"] * size}
        sums.update({name: terms[name] * size for name in LOSS_TERM_NAMES})
        return sums, size

    @tf.function
    def step(iterator, objective_key):
        # objective_key (a Python value) retraces the step when the objective's weights
        # (callbacks.ObjectiveWarmup) or the linear-probe stage change, as fit's
        # make_train_function(force=True).
        del objective_key
        sums, size = strategy.run(replica_step, args=(next(iterator),))
        reduce = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa: E731
        return {k: reduce(v) for k, v in sums.items()}, reduce(size)

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=bool(verbose), model=model, verbose=verbose, epochs=epochs,
        steps=steps,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    first_step = initial_step
    for epoch in range(initial_epoch, epochs):
        iterator = distributed(epoch * steps + first_step)
        callback_list.on_epoch_begin(epoch)
        totals = {name: 0.0 for name in names}
        count = 0.0
        logs = {}
        for batch in range(first_step, steps):
            callback_list.on_train_batch_begin(batch)
            sums, size = step(iterator, (tuple(sorted(model.loss_weight_overrides.items())), bool(model.head_only)))
            count += float(size)
            for name in names:
                totals[name] += float(sums[name])
            logs = {name: totals[name] / count for name in names}
            callback_list.on_train_batch_end(batch, logs)
        first_step = 0
        callback_list.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback_list.on_train_end()
    return model.history


def tf_config_example(workers=2, port=12345):
    """A TF_CONFIG per worker (for the docs and tests)."""
    hosts = [f"host{i}:{port}" for i in range(workers)]
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}) for i in range(workers)]


def make_statistics_sync(model, strategy):
    """A callable averaging the model's non-trainable float variables over replicas.

    Keras 3 creates BatchNorm moving statistics with aggregation "none": each
    replica updates its own copy from its own part of the batch, so the copies
    drift apart (the chief's would be saved, another worker's would differ).
    Averaging them before validation and checkpoints keeps every replica and
    worker identical. Returns None with one replica.
    """
    if strategy.num_replicas_in_sync < 2:
        return None
    variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    if not variables:
        return None

    def replica_fn():
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])

    @tf.function
    def sync():
        means = strategy.run(replica_fn)
        for variable, mean in zip(variables, means):
            # Cross-replica context: the assignment reaches every local copy.
            variable.value.assign(strategy.experimental_local_results(mean)[0])

    return sync


class SyncStatistics(keras.callbacks.Callback):
    """Averages BatchNorm statistics over replicas at epoch ends (and every N steps)."""

    def __init__(self, sync, steps_per_epoch, every_steps=None):
        super().__init__()
        self.sync, self.steps, self.every = sync, int(steps_per_epoch), every_steps
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every and self.step % self.steps and (self.step % self.steps) % self.every == 0:
            self.sync()

    def on_epoch_end(self, epoch, logs=None):
        self.sync()


def statistics_sync_callback(model, strategy, steps_per_epoch, initial_global_step=0, every_steps=None):
    """The callback running `make_statistics_sync` (None with one replica); put it first."""
    sync = make_statistics_sync(model, strategy)
    if sync is None:
        return None
    callback = SyncStatistics(sync, steps_per_epoch, every_steps)
    callback.step = int(initial_global_step)
    return callback
