"""What every model shares to answer queries: argument checks, masking known items, and
``recommend`` (top-k by ``score`` with the user's known items excluded)."""

import math

import numpy as np
import scipy.sparse as sp
import tensorflow as tf


class TopK:
    """Mixin for a model with ``score(users) -> [B, J]`` (higher is better), ``known_items(users)
    -> RaggedTensor`` and ``n_items``."""

    def recommend(self, users, k: int, exclude_known: bool = True):
        """Top-k items by score, ``(scores [B, k] descending, items [B, k])``; the users' known
        items are excluded unless ``exclude_known=False``."""
        check_k(k, self.n_items)
        scores = self.score(users)
        if exclude_known:
            scores = mask_items(scores, self.known_items(users))
        return tf.math.top_k(scores, k)


def mask_items(scores, items: tf.RaggedTensor):
    """Sets scores[b, items[b]] to -inf."""
    rows = tf.cast(items.value_rowids(), tf.int64)
    indices = tf.stack([rows, tf.cast(items.flat_values, tf.int64)], axis=1)
    return tf.tensor_scatter_nd_update(
        scores, indices, tf.fill(tf.shape(rows), tf.constant(-np.inf, scores.dtype)))


def mask_themselves(scores, items):
    """Sets scores[b, items[b]] to -inf for one item per row (similar-item queries)."""
    return mask_items(scores, tf.RaggedTensor.from_tensor(tf.cast(items, tf.int64)[:, None]))


def check_positive(**values):
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be > 0, got {value}")


def check_non_negative(**values):
    for name, value in values.items():
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def check_k(k, available):
    if not 1 <= k <= available:
        raise ValueError(f"k={k} must be between 1 and the number of candidate items "
                         f"({available})")


def check_features(item_features, n_items: int) -> sp.csr_matrix:
    """The features as CSR float32, or ValueError for a wrong row count or NaN/Inf values."""
    features = sp.csr_matrix(item_features, dtype=np.float32)
    if features.shape[0] != n_items:
        raise ValueError(f"item_features has {features.shape[0]} rows but the model has "
                         f"{n_items} items")
    if not np.all(np.isfinite(features.data)):
        raise ValueError("item_features contain NaN or Inf values")
    return features
