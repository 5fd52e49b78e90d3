"""The ADTRS `train_step` / `test_step` on the JAX backend (no TensorFlow).

Keras' JAX trainer is stateless: it hands the step a `state` tuple
`(trainable_variables, non_trainable_variables, optimizer_variables,
metrics_variables)` (`test_step`: without the optimizer's) and expects
`(logs, new_state)` back. Both passes (the crops and their mirror images) go
through `model.network.stateless_call`; the second pass starts from the
non-trainable state the first one left (BatchNorm moving statistics and the
dropout seed generators advance twice per step, as on TensorFlow, where the
network is simply called twice). The loss terms come from the same code as
the TensorFlow step (`ADTRSModel.objective_from_outputs`, i.e.
`keras_adtrs.models.objective.self_consistency` + `adtrs_loss_terms`).

Coupled L2 weight decay (`model.l2_weight_decay`) adds
`0.5 * wd * sum(w**2)` over the trainable weights to the differentiated loss
(so the gradient gains `wd * w`); the trackers record the objective without
it, as on TensorFlow. Dropout randomness comes from Keras' seed generators,
whose states are non-trainable variables threaded through `stateless_call`:
runs are repeatable on JAX but draw other masks than TensorFlow.

Data parallelism: the step computes the objective on the batch it is given;
under `keras.distribution.DataParallel` the ranking margins come from the
whole global batch (unlike TensorFlow's per-replica objective).
"""

import jax
import keras
from keras import ops

from keras_adtrs.models.objective import unpack_batch, update_trackers


def _network_state_indices(model):
    """Positions of the network's variables inside the model's variable lists.

    `ADTRSModel` owns no variables of its own, so the lists normally coincide;
    matching by identity keeps the mapping right if that ever changes.
    """
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    trainable = [position[id(v)] for v in model.network.trainable_variables]
    position = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    non_trainable = [position[id(v)] for v in model.network.non_trainable_variables]
    return trainable, non_trainable


def l2_penalty(weights, l2_weight_decay):
    """`0.5 * l2_weight_decay * sum(w**2)` over a list of arrays."""
    total = 0.0
    for w in weights:
        total = total + ops.sum(ops.square(ops.cast(w, "float32")))
    return 0.5 * l2_weight_decay * total


def stateless_objective(model, trainable_variables, non_trainable_variables, images, labels, training):
    """Loss terms of both passes, statelessly.

    Args:
        model: an `ADTRSModel`.
        trainable_variables, non_trainable_variables: values aligned with
            `model.trainable_variables` / `model.non_trainable_variables`.
        images, labels: one batch.
        training: bool.

    Returns:
        `(terms, new_non_trainable_variables)`, the latter aligned with
        `model.non_trainable_variables`.
    """
    t_index, nt_index = _network_state_indices(model)
    net_trainable = [trainable_variables[i] for i in t_index]
    net_non_trainable = [non_trainable_variables[i] for i in nt_index]
    out, net_non_trainable = model.network.stateless_call(
        net_trainable, net_non_trainable, images, training=training
    )
    out_flipped, net_non_trainable = model.network.stateless_call(
        net_trainable, net_non_trainable, ops.flip(images, axis=2), training=training
    )
    terms = model.objective_from_outputs(out, out_flipped, labels)
    new_non_trainable = list(non_trainable_variables)
    for i, value in zip(nt_index, net_non_trainable):
        new_non_trainable[i] = value
    return terms, new_non_trainable


def _update_trackers_stateless(model, metrics_variables, terms, batch_size):
    """`objective.update_trackers` on the model's trackers, run statelessly on `metrics_variables`."""
    mapping = list(zip(model.metrics_variables, metrics_variables))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        logs = update_trackers(model.loss_trackers, terms, batch_size)
    new_values = []
    for ref, old in zip(model.metrics_variables, metrics_variables):
        value = scope.get_current_value(ref)
        new_values.append(old if value is None else value)
    return logs, new_values


def _trained_indices(model):
    """Positions of the variables this step differentiates: the head's alone in the linear-probe stage."""
    if not model.head_only:
        return list(range(len(model.trainable_variables)))
    head = {id(v) for v in model.head_variables()}
    return [i for i, v in enumerate(model.trainable_variables) if id(v) in head]


def train_step(model, state, data):
    trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables = state
    images, labels = unpack_batch(data)
    optimizer = model.optimizer
    trained = _trained_indices(model)
    # In the linear-probe stage the network runs in inference mode (compute_objective's rule)
    # and only the head's variables are differentiated; the others get a zero gradient.
    training = not model.head_only

    def loss_fn(values):
        trainable = list(trainable_variables)
        for i, value in zip(trained, values):
            trainable[i] = value
        terms, new_non_trainable = stateless_objective(
            model, trainable, non_trainable_variables, images, labels, training=training
        )
        loss = terms["total"]
        if model.l2_weight_decay:
            loss = loss + l2_penalty(values, model.l2_weight_decay)
        # Loss scaling (mixed precision): the scale is an optimizer variable.
        with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_variables))):
            scaled = optimizer.scale_loss(loss)
        return scaled, (terms, new_non_trainable)

    (_, (terms, non_trainable_variables)), trained_grads = jax.value_and_grad(loss_fn, has_aux=True)(
        [trainable_variables[i] for i in trained]
    )
    grads = [jax.numpy.zeros_like(v) for v in trainable_variables]
    for i, grad in zip(trained, trained_grads):
        grads[i] = grad
    trainable_variables, optimizer_variables = optimizer.stateless_apply(
        optimizer_variables, grads, trainable_variables
    )
    logs, metrics_variables = _update_trackers_stateless(model, metrics_variables, terms, ops.shape(labels)[0])
    return logs, (trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables)


def test_step(model, state, data):
    trainable_variables, non_trainable_variables, metrics_variables = state
    images, labels = unpack_batch(data)
    terms, non_trainable_variables = stateless_objective(
        model, trainable_variables, non_trainable_variables, images, labels, training=False
    )
    logs, metrics_variables = _update_trackers_stateless(model, metrics_variables, terms, ops.shape(labels)[0])
    return logs, (trainable_variables, non_trainable_variables, metrics_variables)
