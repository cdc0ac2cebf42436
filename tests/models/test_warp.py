"""WARP-MF: learns planted structure; its loss is the shared rank-weighted hinge on scores."""

import numpy as np
import tensorflow as tf
from zoo_helpers import (assert_recommend_excludes_known, assert_round_trip,
                         assert_vectors_score, fit, planted_split, recall_vs_popularity)

from cml_tf.layers.warp import warp_hinge
from cml_tf.models import WARPMF
from cml_tf.models.sampled import PairBatch


def test_warp_learns_planted_structure_and_round_trips(tmp_path):
    split = planted_split()
    model = WARPMF.from_interactions(split.train, dim=16, lambda_u=1e-3, lambda_v=1e-3, seed=0)
    history = fit(model, split.train, epochs=12, lr=0.05)
    assert 0.0 <= history.history["impostor_fraction"][-1] <= 1.0
    assert history.history["impostor_fraction"][-1] < history.history["impostor_fraction"][0]
    ours, popular = recall_vs_popularity(model, split)
    assert ours > 2 * popular, (ours, popular)  # well above popularity
    assert_vectors_score(model)
    assert_recommend_excludes_known(model, split.train)
    assert_round_trip(model, tmp_path)


def test_warp_pair_loss_is_the_shared_warp_hinge():
    model = WARPMF(5, 50, dim=4, num_negatives=3, margin=1.0)
    pos = tf.constant([2.0, 0.5])
    neg = tf.constant([[1.5, 0.0, -1.0], [3.0, 2.0, -np.inf]])
    batch = PairBatch(*(tf.zeros([2], tf.int32),) * 2, tf.zeros([2, 3], tf.int32),
                      tf.constant([0, 0]), tf.zeros([2], tf.int32), *(tf.zeros([2, 4]),) * 3,
                      pos, tf.reduce_max(neg, axis=1), neg)
    parts, diagnostics = model.pairwise_loss(batch)
    expected, impostors, weight = warp_hinge(pos, neg, 1.0, 50)
    np.testing.assert_allclose(parts["pair_loss"].numpy(), expected.numpy().sum())
    # pair 1: one impostor of 3 -> rank floor(50/3) = 16; pair 2: two of 3 -> 33
    np.testing.assert_allclose(weight.numpy(), np.log([17.0, 34.0]), rtol=1e-6)
    np.testing.assert_allclose(diagnostics["rank_weight"].numpy(), np.log([17.0, 34.0]).mean(),
                               rtol=1e-6)
