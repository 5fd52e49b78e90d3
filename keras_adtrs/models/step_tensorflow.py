"""The ADTRS `train_step` on the TensorFlow backend (TensorFlow-only module).

`ADTRSModel.train_step` calls `train_step(model, data)` here; this module
never imports the model (it takes it as an argument).

Under a `tf.distribute` strategy each replica computes the objective on its
own part of the global batch (so the ranking margins come from that part,
see docs/distributed.md); the total is divided by the number of
replicas before the gradient, so that the all-reduced (summed) gradient is
the gradient of the mean over replicas. Trackers record unscaled values.
"""

import contextlib

import tensorflow as tf

from keras_adtrs.models.fused_batchnorm_tensorflow import use_fused_batchnorm
from keras_adtrs.models.pointwise_conv_tensorflow import pointwise_convs_as_matmuls
from keras_adtrs.models.objective import unpack_batch, update_trackers


def trained_variables(model):
    """The variables this step trains: the head's alone in the linear-probe stage, else every trainable one."""
    return model.head_variables() if model.head_only else model.trainable_variables


def l2_penalty(model, variables):
    """`0.5 * l2_weight_decay * sum(w**2)`: its gradient is the coupled decay `wd * w`."""
    squares = [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables]
    return 0.5 * model.l2_weight_decay * tf.add_n(squares)


def compute_gradients(model, images, labels):
    """`(terms, gradients)` of this replica's batch; no cross-replica communication.

    The total (plus the coupled L2 penalty) is divided by the number of
    replicas before the gradient: the optimizer all-reduces gradients by sum,
    so the applied gradient is that of the mean over replicas, i.e. of the
    global batch for every term that is a mean over crops. With a
    `LossScaleOptimizer` (mixed precision) `scale_loss` scales it.
    """
    if getattr(model, "fused_batchnorm", False):
        # TensorFlow's fused BatchNorm kernel (idempotent; traced once per step function).
        use_fused_batchnorm(model.network)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    variables = trained_variables(model)
    # 1x1 convolutions take their gradients as matrix products (keras_adtrs.models.pointwise_conv_tensorflow).
    pointwise = pointwise_convs_as_matmuls(model.network) if model.matmul_pointwise_gradients else contextlib.nullcontext()
    with pointwise, tf.GradientTape() as tape:
        terms = model.compute_objective(images, labels, training=True)
        loss = terms["total"]
        if model.l2_weight_decay:
            loss = loss + l2_penalty(model, variables)
        scaled = model.optimizer.scale_loss(loss / replicas)
    return terms, tape.gradient(scaled, variables)


def _xla_gradients(model):
    """`compute_gradients` compiled with XLA (one `tf.function` per model).

    Used when `model.xla_gradients` is set: under a strategy with several
    replicas the step's all-reduce cannot be compiled on CPUs ("Collectives
    are not yet implemented for CPU devices when compiling with XLA"), so
    `--jit-compile` compiles the forward and backward passes and leaves the
    optimizer's all-reduce and update outside XLA. The objective's weights
    (`loss_weight_overrides`) and the linear-probe stage are a Python-valued
    argument: a change retraces.
    """
    function = getattr(model, "_xla_gradient_function", None)
    if function is None:

        def gradients(images, labels, objective_key):
            del objective_key
            return compute_gradients(model, images, labels)

        function = tf.function(gradients, jit_compile=True, reduce_retracing=True)
        model._xla_gradient_function = function
    return function


def apply_step(model, data):
    """One optimisation step on this replica's batch: `(terms, batch_size)`.

    `compute_gradients` of the trained variables (the head's alone in the
    linear-probe stage: `model.head_only`), then `optimizer.apply` (which all-reduces the
    gradients across replicas; with a `LossScaleOptimizer` it unscales them
    and skips non-finite steps).
    """
    images, labels = unpack_batch(data)
    if getattr(model, "xla_gradients", False):
        key = (tuple(sorted(model.loss_weight_overrides.items())), bool(model.head_only))
        terms, gradients = _xla_gradients(model)(images, labels, key)
    else:
        terms, gradients = compute_gradients(model, images, labels)
    model.optimizer.apply(gradients, trained_variables(model))
    return terms, tf.shape(labels)[0]


def train_step(model, data):
    """`fit`'s step: `apply_step`, then the Mean trackers (weighted by batch size).

    The trackers' variables are summed across replicas when read, so the
    epoch logs are the global-batch means.
    """
    terms, batch_size = apply_step(model, data)
    return update_trackers(model.loss_trackers, terms, batch_size)
