"""Checks shared by the FM, VBPR-MLP and CDL-MLP tests."""

import numpy as np
import tensorflow as tf
from zoo_helpers import check_learns_and_round_trips as check_learns


def feature_rows(train, items):
    """The items' features as a tf.SparseTensor (what the export's embed_items receives)."""
    rows = train.item_features[items].tocoo()
    return tf.sparse.reorder(tf.SparseTensor(np.stack([rows.row, rows.col], 1).astype(np.int64),
                                             rows.data.astype(np.float32), rows.shape))


def check_learns_and_round_trips(cls, tmp_path, **hyperparameters):
    """zoo_helpers' check, plus: the model sized its feature table from the data and its loss
    fell. Returns (model, split)."""
    model, split, history = check_learns(cls, tmp_path, **hyperparameters)
    assert model.n_features == split.train.item_features.shape[1]
    assert history.history["loss"][-1] < history.history["loss"][0]
    return model, split


def check_feature_gradients_are_sparse(model, split):
    """The gradient of every feature-indexed table is IndexedSlices over present features."""
    users = tf.constant([0, 1], tf.int32)
    items = tf.constant([split.train.matrix[u].indices[0] for u in (0, 1)], tf.int32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.pair_scores(model.user_vectors_for(users, training=True),
                                               model.item_vectors_for(items, training=True)))
    variables = [v for v in model.trainable_variables if v.shape[0] == model.n_features]
    assert variables
    for gradient in tape.gradient(loss, variables):
        assert isinstance(gradient, tf.IndexedSlices)
        present = set(split.train.item_features[items.numpy()].indices)
        assert set(gradient.indices.numpy()) <= present


def check_cold_start_vectors(model, split, expected_from_vectors):
    """embed_items(features) equals what the item vectors imply for items without free part."""
    items = np.array([0, 5, 9])
    got = model.embed_items(feature_rows(split.train, items)).numpy()
    np.testing.assert_allclose(got, expected_from_vectors(items), rtol=1e-4, atol=1e-5)
