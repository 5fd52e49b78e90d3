"""The ADTRS `train_step` on the TensorFlow backend (TensorFlow-only module).

Under a `tf.distribute` strategy each replica computes the objective on its
own part of the global batch (so the ranking margins come from that part,
see README "Distributed training"); the total is divided by the number of
replicas before the gradient, so that the all-reduced (summed) gradient is
the gradient of the mean over replicas. Trackers record unscaled values.
"""

import tensorflow as tf

from keras_adtrs.model import unpack_batch


def l2_penalty(model):
    """`0.5 * l2_weight_decay * sum(w**2)`: its gradient is the coupled decay `wd * w`."""
    squares = [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in model.trainable_variables]
    return 0.5 * model.l2_weight_decay * tf.add_n(squares)


def apply_step(model, data):
    """One optimisation step on this replica's batch: `(terms, batch_size)`.

    The total (plus the coupled L2 penalty) is divided by the number of
    replicas before the gradient: the optimizer all-reduces gradients by sum,
    so the applied gradient is that of the mean over replicas, i.e. of the
    global batch for every term that is a mean over crops. With a
    `LossScaleOptimizer` (mixed precision) `scale_loss` scales it and `apply`
    unscales and skips non-finite steps.
    """
    images, labels = unpack_batch(data)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        terms = model.compute_objective(images, labels, training=True)
        loss = terms["total"]
        if model.l2_weight_decay:
            loss = loss + l2_penalty(model)
        scaled = model.optimizer.scale_loss(loss / replicas)
    gradients = tape.gradient(scaled, variables)
    model.optimizer.apply(gradients, variables)
    return terms, tf.shape(labels)[0]


def train_step(model, data):
    """`fit`'s step: `apply_step`, then the Mean trackers (weighted by batch size).

    The trackers' variables are summed across replicas when read, so the
    epoch logs are the global-batch means.
    """
    terms, batch_size = apply_step(model, data)
    return model._update_trackers(terms, batch_size)
