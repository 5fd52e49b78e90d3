"""The ADTRS training objective (ADTRS_SPEC §2), backend-agnostic (`keras.ops`).

`adtrs_loss_terms` reproduces the authors' loss code term by term
(`tests/testdata/adtrs_loss_reference.json` is the test fixture). Also what
every training step shares: `unpack_batch` and `update_trackers`. This module
imports no model: the model (`keras_adtrs.models.adtrs`) and the training
steps (`step_tensorflow`, `step_jax`) import it.
"""

from keras import ops

#: Default weight of each term in the total, as in the authors' code.
DEFAULT_LOSS_WEIGHTS = {
    "quality": 1.0,
    "consistency": 1.0,
    "ranking": 0.05,
    "ranking_consistency": 1.0,
}

#: Names of the terms returned by `adtrs_loss_terms`, in reporting order.
LOSS_TERM_NAMES = (
    "quality",
    "quality_flipped",
    "consistency",
    "consistency_flipped",
    "ranking",
    "ranking_flipped",
    "ranking_consistency",
)

_TRIPLET_EPS = 1e-6


def mean_absolute_error(a, b):
    """Mean of `|a - b|` over every element (`nn.L1Loss`)."""
    return ops.mean(ops.abs(a - b))


def stable_rank(labels):
    """Position of each label in a stable ascending sort (ties: lower index first).

    Computed by pairwise comparison, so it is exact and identical on every
    backend: `rank[i] = #{j: y[j] < y[i]} + #{j < i: y[j] == y[i]}`.
    """
    labels = ops.convert_to_tensor(labels)
    y_i = ops.expand_dims(labels, 1)
    y_j = ops.expand_dims(labels, 0)
    n = ops.shape(labels)[0]
    index = ops.arange(n)
    earlier = ops.expand_dims(index, 0) < ops.expand_dims(index, 1)
    before = ops.logical_or(y_j < y_i, ops.logical_and(y_j == y_i, earlier))
    return ops.sum(ops.cast(before, "int32"), axis=1)


def _pick(values, rank, position):
    """values[order[position]] where order is the stable ascending argsort."""
    mask = ops.cast(ops.equal(rank, position), values.dtype)
    return ops.sum(values * mask)


def _triplet(anchor, positive, negative, margin):
    d_pos = ops.abs(anchor - positive + _TRIPLET_EPS)
    d_neg = ops.abs(anchor - negative + _TRIPLET_EPS)
    return ops.relu(d_pos - d_neg + margin)


def relative_ranking(labels, scores):
    """The two-triplet relative-ranking loss on one batch (ADTRS_SPEC §2).

    With `o` the stable ascending argsort of `labels`:
    `tri(q[o0], q[o1], q[o-1], y[o-1] - y[o1]) + tri(q[o-1], q[o-2], q[o0], y[o-2] - y[o0])`.
    Margins come from the batch's own labels and carry no gradient. Batches of
    fewer than 2 crops give 0.

    Returns:
        `(first_triplet, second_triplet)` scalars.
    """
    labels = ops.stop_gradient(ops.cast(labels, "float32"))
    scores = ops.cast(scores, "float32")
    n = ops.shape(labels)[0]
    rank = stable_rank(labels)
    first, second, last, second_last = 0, 1, n - 1, n - 2
    y = lambda p: _pick(labels, rank, p)  # noqa: E731
    q = lambda p: _pick(scores, rank, p)  # noqa: E731
    valid = ops.cast(ops.greater_equal(n, 2), "float32")
    margin1 = y(last) - y(second)
    margin2 = y(second_last) - y(first)
    t1 = _triplet(q(first), q(second), q(last), margin1) * valid
    t2 = _triplet(q(last), q(second_last), q(first), margin2) * valid
    return t1, t2


def adtrs_loss_terms(
    labels,
    scores,
    scores_flipped,
    consistency,
    consistency_flipped,
    loss_weights=None,
):
    """Every term of the ADTRS objective for one batch, and their weighted total.

    Args:
        labels: `(B,)` human scores in the data set's own units.
        scores: `(B,)` predictions on the crops.
        scores_flipped: `(B,)` predictions on the horizontally flipped crops.
        consistency: scalar self-consistency loss of the first pass
            (`L1(F, sg(Ff)) + L1(L4, sg(L4f))`).
        consistency_flipped: the same for the flipped pass.
        loss_weights: dict or None. Weights of `quality`, `consistency`,
            `ranking` and `ranking_consistency`; missing keys take
            `DEFAULT_LOSS_WEIGHTS` (1, 1, 0.05, 1: the authors').

    Returns:
        dict of scalars: `quality`, `quality_flipped`, `consistency`,
        `consistency_flipped`, `ranking`, `ranking_flipped`,
        `ranking_consistency` and `total`.

    Example:
    >>> terms = adtrs_loss_terms([1., 2., 3.], [1., 2., 2.], [1., 1., 3.], 0., 0.)
    >>> sorted(terms)[:3]
    ['consistency', 'consistency_flipped', 'quality']
    """
    weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
    unknown = set(weights) - set(DEFAULT_LOSS_WEIGHTS)
    if unknown:
        raise ValueError(
            f"unknown loss weight(s) {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}"
        )
    labels = ops.cast(ops.reshape(labels, (-1,)), "float32")
    scores = ops.cast(ops.reshape(scores, (-1,)), "float32")
    scores_flipped = ops.cast(ops.reshape(scores_flipped, (-1,)), "float32")
    terms = {
        "quality": mean_absolute_error(scores, labels),
        "quality_flipped": mean_absolute_error(scores_flipped, labels),
        "consistency": ops.cast(consistency, "float32"),
        "consistency_flipped": ops.cast(consistency_flipped, "float32"),
    }
    ranking = ops.add(*relative_ranking(labels, scores))
    ranking_flipped = ops.add(*relative_ranking(labels, scores_flipped))
    terms["ranking"] = ranking
    terms["ranking_flipped"] = ranking_flipped
    terms["ranking_consistency"] = 0.5 * (
        ops.abs(ranking - ops.stop_gradient(ranking_flipped))
        + ops.abs(ranking_flipped - ops.stop_gradient(ranking))
    )
    terms["total"] = (
        weights["quality"] * (terms["quality"] + terms["quality_flipped"])
        + weights["consistency"] * (terms["consistency"] + terms["consistency_flipped"])
        + weights["ranking"] * (ranking + ranking_flipped)
        + weights["ranking_consistency"] * terms["ranking_consistency"]
    )
    return terms


def self_consistency(features, features_flipped, layer4, layer4_flipped, flip_back=False):
    """Self-consistency losses of the two passes (ADTRS_SPEC §2).

    Returns `(consistency, consistency_flipped)` with
    `consistency = L1(F, sg(Ff)) + L1(L4, sg(L4f))` and the mirror image for
    the flipped pass. With `flip_back=False` (the authors' code) the maps are
    compared position by position; with `flip_back=True` the flipped pass's
    maps are flipped back first, so position p of the crop meets position p of
    the flipped crop's mirror (equivariance rather than symmetry).
    """
    if flip_back:
        features_flipped = ops.flip(features_flipped, axis=2)
        layer4_flipped = ops.flip(layer4_flipped, axis=2)
    sg = ops.stop_gradient
    f, ff = ops.cast(features, "float32"), ops.cast(features_flipped, "float32")
    l4, l4f = ops.cast(layer4, "float32"), ops.cast(layer4_flipped, "float32")
    consistency = mean_absolute_error(f, sg(ff)) + mean_absolute_error(l4, sg(l4f))
    consistency_flipped = mean_absolute_error(ff, sg(f)) + mean_absolute_error(l4f, sg(l4))
    return consistency, consistency_flipped


def unpack_batch(data):
    """`(images, labels)` from a `fit` batch: `(x, y)` or `(x, y, sample_weight)`."""
    if not isinstance(data, (tuple, list)) or len(data) < 2:
        raise ValueError(
            "ADTRS trains on (crops, scores) pairs; got a batch without labels"
        )
    return data[0], data[1]


def update_trackers(trackers, terms, batch_size):
    """Adds one batch's terms to the Mean trackers; returns their results.

    Args:
        trackers: dict name -> `keras.metrics.Mean`, with `"loss"` and every
            name of `LOSS_TERM_NAMES` (an `ADTRSModel`'s `loss_trackers`).
        terms: dict of `adtrs_loss_terms`; `"loss"` records `terms["total"]`.
        batch_size: the batch's number of crops (each tracker's sample weight).

    Returns:
        dict name -> the tracker's running mean.
    """
    trackers["loss"].update_state(terms["total"], sample_weight=batch_size)
    for name in LOSS_TERM_NAMES:
        trackers[name].update_state(terms[name], sample_weight=batch_size)
    return {name: tracker.result() for name, tracker in trackers.items()}
