"""`ADTRSModel.predict`'s input pipeline on the TensorFlow backend (TensorFlow-only module).

Keras' `Model.predict` on TensorFlow builds a `tf.data` pipeline for array
input and destroys its iterator when the call ends. With tf.data's
autotuning on (its default), that destruction sometimes blocks until the
autotuning thread's next optimisation tick: the thread sleeps in periods that
double from 10 ms up to 60 s and is not always woken when the iterator is
cancelled. A short `predict` call (a few batches) then costs up to the rest of
the current period on top of its compute: the "bimodal" `model.predict` of
docs/benchmarks.md (the measurements, and a minimal reproduction without this
package: `benchmarks/keras_predict_bimodal_repro.py`).

`array_dataset` gives `predict` the same batches through a pipeline with
autotuning off, whose iterator has no autotuning thread to wait for. Input
that is already a dataset, a generator or a `PyDataset` is left alone (set
`options.autotune.enabled = False` on a `tf.data.Dataset` to avoid the wait).
"""

import keras
import numpy as np
import tensorflow as tf


def array_dataset(x, batch_size=None):
    """The batches `Model.predict` would cut from array input, as a `tf.data.Dataset` without autotuning.

    Args:
        x: the `predict` input.
        batch_size: int or None. Batch size; `None` is Keras' default, 32.

    Returns:
        A batched `tf.data.Dataset` for a numpy array or a tensor (floating
        arrays cast to Keras' float type, as `predict` does); None for any
        other input, which `predict` then takes as it is.
    """
    if isinstance(x, np.ndarray):
        if np.issubdtype(x.dtype, np.floating) and x.dtype != keras.backend.floatx():
            x = x.astype(keras.backend.floatx())
    elif not tf.is_tensor(x) or isinstance(x, tf.SparseTensor) or isinstance(x, tf.RaggedTensor):
        return None
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(int(batch_size or 32))
    options = tf.data.Options()
    options.autotune.enabled = False  # no autotuning thread: nothing to wait for when the iterator goes
    options.experimental_optimization.apply_default_optimizations = False  # as Keras' own array pipeline
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
