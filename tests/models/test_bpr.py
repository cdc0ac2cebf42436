"""BPR-MF: learns planted structure, sparse updates, bias coordinate, save/load."""

import numpy as np
import tensorflow as tf
from zoo_helpers import check_learns_and_round_trips, planted_split

from cml_tf.models import BPRMF


def test_bpr_learns_planted_structure_and_round_trips(tmp_path):
    _, _, history = check_learns_and_round_trips(BPRMF, tmp_path, epochs=15, lr=0.1,
                                                 lambda_u=1e-3, lambda_v=1e-3)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_bpr_step_touches_only_the_batch_and_bias_rides_as_a_coordinate():
    split = planted_split()
    model = BPRMF.from_interactions(split.train, dim=8, seed=0)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))
    users_before, items_before = model.user_vectors.copy(), model.item_vectors.copy()
    assert users_before.shape == (split.train.n_users, 9)
    np.testing.assert_array_equal(users_before[:, -1], 1.0)   # the constant bias coordinate
    np.testing.assert_array_equal(items_before[:, -1], 0.0)   # biases start at 0
    users = tf.constant([0, 1], tf.int32)
    items = tf.constant([split.train.matrix[u].indices[0] for u in (0, 1)], tf.int32)
    logs = model.train_step((users, items))
    assert set(logs) == {"loss", "pair_loss"}
    changed_users = np.flatnonzero(np.any(model.user_vectors != users_before, axis=1))
    assert set(changed_users) <= {0, 1} and len(changed_users) > 0
    changed_items = np.flatnonzero(np.any(model.item_vectors != items_before, axis=1))
    assert set(items.numpy()) <= set(changed_items) and len(changed_items) <= 4
