"""WARP-MF: learns planted structure; its loss is the shared rank-weighted hinge on scores."""

import numpy as np
import tensorflow as tf
from zoo_helpers import check_learns_and_round_trips

from cml_tf.layers.warp import warp_hinge
from cml_tf.models import WARPMF
from cml_tf.models.sampled import PairBatch


def test_warp_learns_planted_structure_and_round_trips(tmp_path):
    _, _, history = check_learns_and_round_trips(WARPMF, tmp_path, epochs=12, lr=0.05,
                                                 lambda_u=1e-3, lambda_v=1e-3)
    fraction = history.history["impostor_fraction"]
    assert 0.0 <= fraction[-1] <= 1.0 and fraction[-1] < fraction[0]


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
