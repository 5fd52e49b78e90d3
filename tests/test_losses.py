"""The ADTRS objective against the authors' loss code (tests/testdata/adtrs_loss_reference.json)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import TESTDATA
from keras_adtrs.models.objective import adtrs_loss_terms, relative_ranking, stable_rank

FIXTURE = TESTDATA / "adtrs_loss_reference.json"
CASES = json.loads(FIXTURE.read_text())["cases"]
NAMES = {
    "loss_qa": "quality",
    "loss_qa2": "quality_flipped",
    "tripletlosses": "ranking",
    "ftripletlosses": "ranking_flipped",
    "rank_consistency": "ranking_consistency",
    "total": "total",
}


def close(ours, theirs):
    assert abs(float(ours) - theirs) <= 1e-4 * max(1.0, abs(theirs)), (float(ours), theirs)


def test_fixture_has_cases():
    assert len(CASES) >= 4, FIXTURE


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_terms_match_the_authors_code(case):
    inputs, expected = case["inputs"], case["expected"]
    labels = tf.constant(inputs["labels"], tf.float32)
    pred = tf.Variable(np.asarray(inputs["pred"], "float32").reshape(-1))
    pred_flip = tf.Variable(np.asarray(inputs["pred_flip"], "float32").reshape(-1))
    with tf.GradientTape() as tape:
        terms = adtrs_loss_terms(labels, pred, pred_flip, inputs["closs"], inputs["closs2"])
    for theirs, ours in NAMES.items():
        close(terms[ours], expected[theirs])
    close(terms["consistency"], inputs["closs"])
    close(terms["consistency_flipped"], inputs["closs2"])
    close(0.05 * (terms["ranking"] + terms["ranking_flipped"]), expected["rank_weighted_0.05"])
    t1, t2 = relative_ranking(labels, pred)
    close(t1, expected["triplet1_pred"])
    close(t2, expected["triplet2_pred"])
    order = np.argsort(stable_rank(labels).numpy())
    np.testing.assert_array_equal(order, expected["indexlabel_argsort"])
    grads = tape.gradient(terms["total"], [pred, pred_flip])
    np.testing.assert_allclose(grads[0].numpy(), expected["grad_total_wrt_pred"], atol=1e-5)
    np.testing.assert_allclose(grads[1].numpy(), expected["grad_total_wrt_pred_flip"], atol=1e-5)


def test_ties_break_lower_index_first():
    labels = np.array([3.0, 1.0, 1.0, 2.0, 3.0], "float32")
    np.testing.assert_array_equal(stable_rank(labels).numpy(), [3, 0, 1, 2, 4])
    np.testing.assert_array_equal(np.argsort(stable_rank(labels).numpy()), np.argsort(labels, kind="stable"))


def test_loss_weights_and_degenerate_batches():
    terms = adtrs_loss_terms([1.0, 5.0, 9.0], [2.0, 4.0, 9.0], [1.0, 5.0, 8.0], 0.5, 0.25, {"ranking": 1.0, "consistency": 2.0})
    expected = (
        (terms["quality"] + terms["quality_flipped"])
        + 2.0 * (0.5 + 0.25)
        + 1.0 * (terms["ranking"] + terms["ranking_flipped"])
        + terms["ranking_consistency"]
    )
    close(terms["total"], float(expected))
    single = adtrs_loss_terms([4.0], [3.0], [5.0], 0.0, 0.0)
    assert float(single["ranking"]) == 0.0 and float(single["quality"]) == 1.0
    with pytest.raises(ValueError, match="unknown loss weight"):
        adtrs_loss_terms([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], 0.0, 0.0, {"rank": 1.0})
