"""Ranking metrics in TensorFlow against a plain numpy reference of the protocol."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from cml_tf.metrics import group_size, grouped_top_k, ranking_metrics


def reference(scores, heldout, exclude, unseen, ks):
    """Recall/NDCG/Precision@K per DESIGN.md, one user at a time, with stable tie order."""
    out = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "precision")}
    for u in range(scores.shape[0]):
        held = set(np.flatnonzero(heldout[u]))
        total = len(held) + unseen[u]
        if total == 0:
            continue
        s = scores[u].astype(np.float64).copy()
        s[np.flatnonzero(exclude[u])] = -np.inf
        ranking = [j for j in np.argsort(-s, kind="stable") if np.isfinite(s[j])]
        for k in ks:
            top = ranking[:k]
            hits = [1.0 if j in held else 0.0 for j in top]
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, total)))
            out[f"recall@{k}"].append(sum(hits) / total)
            out[f"precision@{k}"].append(sum(hits) / k)
            out[f"ndcg@{k}"].append(dcg / idcg)
    return {name: float(np.mean(v)) for name, v in out.items()}


def score_fn_for(scores):
    table = tf.constant(scores, tf.float32)
    return lambda users: tf.gather(table, users)


@settings(max_examples=60, deadline=None)
@given(n_users=st.integers(1, 12), n_items=st.integers(3, 30), seed=st.integers(0, 10**6),
       batch=st.integers(1, 5))
def test_matches_numpy_reference(n_users, n_items, seed, batch):
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32)
    cell = rng.random((n_users, n_items))
    exclude = cell < 0.2
    heldout = (cell > 0.7)
    unseen = rng.integers(0, 3, n_users) * (rng.random(n_users) < 0.3)
    ks = sorted({1, min(3, n_items), n_items})
    got = ranking_metrics(score_fn_for(scores), sp.csr_matrix(heldout), sp.csr_matrix(exclude),
                          unseen, ks=ks, batch_size=batch)
    users_with_heldout = int(((heldout.sum(1) + unseen) > 0).sum())
    assert got["users"] == users_with_heldout
    if not users_with_heldout:
        return
    expected = reference(scores, heldout, exclude, unseen, ks)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


@settings(max_examples=40, deadline=None)
@given(n_items=st.integers(1, 3000), k=st.integers(1, 120), levels=st.sampled_from([2, 7, 1000]),
       excluded=st.floats(0.0, 0.99), seed=st.integers(0, 10**6))
def test_grouped_top_k_equals_top_k_with_ties_and_exclusions(n_items, k, levels, excluded, seed):
    """Values and indices as tf.math.top_k's, ties to the lower index, -inf rows included."""
    k = min(k, n_items)
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (4, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < excluded] = -np.inf
    scores[1] = -np.inf  # a row with nothing left
    size = group_size(n_items, k)
    padded = np.pad(scores, [(0, 0), (0, -n_items % size)], constant_values=-np.inf)
    values, indices = grouped_top_k(tf.constant(padded), k, size)
    expected = tf.math.top_k(scores, k)
    np.testing.assert_array_equal(values.numpy(), expected.values.numpy())
    finite = np.isfinite(expected.values.numpy())
    np.testing.assert_array_equal(indices.numpy()[finite], expected.indices.numpy()[finite])


def test_grouped_ranking_matches_numpy_reference():
    """A catalogue large enough to be ranked in groups (G = 8 at 2,000 items and K = 30),
    with tied scores, known items excluded and unseen held-out items."""
    rng = np.random.default_rng(3)
    n_users, n_items, ks = 40, 2000, (1, 10, 30)
    assert group_size(n_items, max(ks)) == 8
    scores = rng.integers(0, 50, (n_users, n_items)).astype(np.float32)
    cell = rng.random((n_users, n_items))
    exclude, heldout = cell < 0.3, cell > 0.99
    unseen = rng.integers(0, 2, n_users)
    got = ranking_metrics(score_fn_for(scores), sp.csr_matrix(heldout), sp.csr_matrix(exclude),
                          unseen, ks=ks, batch_size=16)
    for name, value in reference(scores, heldout, exclude, unseen, ks).items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_hand_made_case():
    # one user, items 0..4 scored 5..1; item 0 known (excluded); held-out {1, 4} + 1 unseen item
    scores = np.array([[5, 4, 3, 2, 1]], np.float32)
    got = ranking_metrics(score_fn_for(scores), sp.csr_matrix([[0, 1, 0, 0, 1]]),
                          sp.csr_matrix([[1, 0, 0, 0, 0]]), np.array([1]), ks=(1, 4))
    assert got["recall@1"] == pytest.approx(1 / 3)      # item 1 ranks first once 0 is excluded
    assert got["precision@1"] == 1.0
    assert got["recall@4"] == pytest.approx(2 / 3)      # items 1 and 4 found; the unseen never
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg@4"] == pytest.approx((1 + 1 / math.log2(5)) / idcg)


def test_k_larger_than_items_is_an_error():
    with pytest.raises(ValueError, match="larger than the number of items"):
        ranking_metrics(score_fn_for(np.zeros((1, 3), np.float32)), sp.csr_matrix([[1, 0, 0]]),
                        ks=(5,))


def test_per_user_values():
    scores = np.array([[3, 2, 1], [1, 2, 3]], np.float32)
    got = ranking_metrics(score_fn_for(scores), sp.csr_matrix([[1, 0, 0], [1, 0, 0]]), ks=(1,),
                          return_per_user=True)
    assert got["per_user"]["recall@1"].tolist() == [1.0, 0.0]
    assert got["user_index"].tolist() == [0, 1]


def test_popularity_baseline_on_citeulike_t(citeulike_dir):
    """Ranking every user's list by training popularity lands where the protocol says it should
    on the paper's split (DESIGN.md: Recall@50 about 0.061, Recall@100 about 0.091)."""
    from cml_tf.data.citeulike import load_citeulike_t  # pylint: disable=import-outside-toplevel
    from cml_tf.data.split import split_per_user  # pylint: disable=import-outside-toplevel
    split = split_per_user(load_citeulike_t(citeulike_dir, with_features=False), seed=0)
    popularity = tf.constant(np.asarray(split.train.matrix.sum(axis=0)).ravel(), tf.float32)
    metrics = ranking_metrics(
        lambda users: tf.tile(popularity[None, :], [tf.shape(users)[0], 1]),
        split.test.matrix, split.known_matrix(), split.test_unseen, ks=(50, 100))
    assert metrics["recall@50"] == pytest.approx(0.061, abs=0.008)
    assert metrics["recall@100"] == pytest.approx(0.091, abs=0.01)
