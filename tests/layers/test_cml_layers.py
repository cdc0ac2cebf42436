"""CML's layers against numpy: forward values and gradients."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from cml_tf.layers import CovarianceRegularizer, FeaturePrior, UnitBallEmbedding, WarpHingeLoss
from cml_tf.layers.feature_prior import SparseRows, sparse_rows_matmul


# ---- unit-ball embedding ---------------------------------------------------------------------

def test_initial_rows_are_normal_with_variance_one_over_r_and_inside_the_ball():
    layer = UnitBallEmbedding(20000, 50, seed=3)
    table = layer.embeddings.numpy()
    assert np.linalg.norm(table, axis=1).max() <= 1.0 + 1e-6
    # Below the ball's surface the values are the N(0, 1/r) draws themselves.
    inside = table[np.linalg.norm(table, axis=1) < 0.99]
    assert len(inside) > 1000
    assert np.std(table) == pytest.approx(1 / math.sqrt(50), rel=0.05)


def test_censor_rows_projects_only_the_given_rows():
    layer = UnitBallEmbedding(10, 4, seed=0)
    big = np.arange(40, dtype=np.float32).reshape(10, 4) / 3.0
    layer.embeddings.assign(big)
    layer.censor_rows(tf.constant([1, 3, 3, 8]))
    after = layer.embeddings.numpy()
    for row in (1, 3, 8):
        expected = big[row] / max(np.linalg.norm(big[row]), 1.0)
        np.testing.assert_allclose(after[row], expected, rtol=1e-6)
        assert np.linalg.norm(after[row]) == pytest.approx(1.0, abs=1e-6)
    untouched = [r for r in range(10) if r not in (1, 3, 8)]
    assert np.array_equal(after[untouched], big[untouched])  # bit-identical


def test_censor_keeps_short_rows():
    layer = UnitBallEmbedding(3, 2)
    small = np.array([[0.1, 0.2], [0.0, 0.0], [0.6, 0.8]], np.float32)
    layer.embeddings.assign(small)
    layer.censor_rows(tf.constant([0, 1, 2]))
    assert np.array_equal(layer.embeddings.numpy(), small)


# ---- WARP hinge loss -------------------------------------------------------------------------

def numpy_warp(pos, neg, margin, n_items):
    violation = margin + pos[:, None] - neg
    m = (violation > 0).sum(1)
    weight = np.log(np.floor(n_items * m / neg.shape[1]) + 1)
    return weight * np.maximum(violation.max(1), 0), m, weight


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 8), u=st.integers(1, 6), seed=st.integers(0, 10**6),
       margin=st.floats(0.05, 2.0), n_items=st.integers(1, 10**6))
def test_warp_forward_matches_numpy(n, u, seed, margin, n_items):
    rng = np.random.default_rng(seed)
    pos = rng.random(n).astype(np.float32) * 2
    neg = rng.random((n, u)).astype(np.float32) * 2
    loss, impostors, weight = WarpHingeLoss(margin, n_items)(tf.constant(pos), tf.constant(neg))
    e_loss, e_m, e_w = numpy_warp(pos.astype(np.float64), neg.astype(np.float64), margin, n_items)
    np.testing.assert_array_equal(impostors.numpy(), e_m)
    np.testing.assert_allclose(weight.numpy(), e_w, rtol=1e-5)
    np.testing.assert_allclose(loss.numpy(), e_loss, rtol=1e-4, atol=1e-5)


def test_rank_weight_edge_cases():
    layer = WarpHingeLoss(0.5, n_items=1000)
    # no impostor: weight 0, loss 0
    loss, m, w = layer(tf.constant([0.1]), tf.constant([[2.0, 3.0, 4.0]]))
    assert m.numpy()[0] == 0 and w.numpy()[0] == 0 and loss.numpy()[0] == 0
    # all U impostors: weight log(J + 1)
    loss, m, w = layer(tf.constant([1.0]), tf.constant([[0.9, 0.8, 0.7]]))
    assert m.numpy()[0] == 3
    assert w.numpy()[0] == pytest.approx(math.log(1001))
    assert loss.numpy()[0] == pytest.approx(math.log(1001) * (0.5 + 1.0 - 0.7), rel=1e-5)


def test_warp_gradient_flows_to_hardest_negative_only_and_not_through_weight():
    layer = WarpHingeLoss(0.5, n_items=100)
    pos = tf.Variable([0.4])
    neg = tf.Variable([[0.3, 0.2, 5.0]])
    with tf.GradientTape() as tape:
        loss, _, weight = layer(pos, neg)
    g_pos, g_neg = tape.gradient(loss, [pos, neg])
    w = math.log(math.floor(100 * 2 / 3) + 1)
    assert weight.numpy()[0] == pytest.approx(w)
    np.testing.assert_allclose(g_pos.numpy(), [w], rtol=1e-6)  # d/dpos of w*(m + pos - 0.2)
    np.testing.assert_allclose(g_neg.numpy(), [[0.0, -w, 0.0]], rtol=1e-6)


def test_warp_rejects_bad_margin():
    with pytest.raises(ValueError, match="margin"):
        WarpHingeLoss(0.0, 10)


# ---- covariance regularizer ------------------------------------------------------------------

def numpy_decov(x):
    n = x.shape[0]
    c = (x - x.mean(0)).T @ (x - x.mean(0)) / n
    return ((c ** 2).sum() - (np.diag(c) ** 2).sum()) / n


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 30), r=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_covariance_matches_numpy_and_is_never_negative(n, r, seed):
    x = np.random.default_rng(seed).normal(size=(n, r)).astype(np.float32)
    value = CovarianceRegularizer()(tf.constant(x)).numpy()
    assert value >= 0
    assert value == pytest.approx(numpy_decov(x.astype(np.float64)), rel=1e-4, abs=1e-6)


def test_covariance_gradient_matches_finite_differences():
    x = np.random.default_rng(0).normal(size=(6, 3))
    var = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = CovarianceRegularizer(dtype="float64")(var)
    grad = tape.gradient(value, var).numpy()
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in range(6):
        for j in range(3):
            up, down = x.copy(), x.copy()
            up[i, j] += eps
            down[i, j] -= eps
            numeric[i, j] = (numpy_decov(up) - numpy_decov(down)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_covariance_of_decorrelated_vectors_is_zero():
    x = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)
    assert CovarianceRegularizer()(tf.constant(x)).numpy() == pytest.approx(0.0, abs=1e-7)


# ---- feature prior ---------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [False, True])
def test_feature_prior_matches_dense_numpy_forward(normalize):
    features = sp.random(7, 30, density=0.2, random_state=2, format="csr", dtype=np.float32)
    # Item 3 has no features: its row stays zero when normalised.
    features = (sp.diags((np.arange(7) != 3).astype(np.float32)) @ features).tocsr()
    features.eliminate_zeros()
    prior = FeaturePrior(dim=5, n_features=30, hidden=16, dropout=0.5, seed=0,
                         normalize=normalize)
    rows = SparseRows.from_matrix(features)
    out = prior(rows(tf.range(7)), training=False).numpy()
    w1, b1 = prior.w1.numpy(), prior.b1.numpy()
    w2, b2 = prior.output_layer.kernel.numpy(), prior.output_layer.bias.numpy()
    x = features.toarray()
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    hidden = np.maximum(x @ w1 + b1, 0)
    expected = hidden @ w2 + b2
    expected /= np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
    assert FeaturePrior.from_config(prior.get_config()).normalize == normalize


def test_feature_prior_gradient_of_w1_is_sparse_and_correct():
    features = sp.csr_matrix(np.array([[1.0, 0, 2.0, 0], [0, 0, 0, 3.0]], np.float32))
    prior = FeaturePrior(dim=3, n_features=4, hidden=5, dropout=0.0, seed=0)
    target = tf.constant(np.full((2, 3), 0.1, np.float32))
    sparse = SparseRows.from_matrix(features)(tf.constant([0, 1]))
    with tf.GradientTape() as tape:
        loss = prior.prior_loss(prior(sparse, training=True), target)
    grad = tape.gradient(loss, prior.w1)
    assert isinstance(grad, tf.IndexedSlices)
    assert sorted(set(grad.indices.numpy().tolist())) == [0, 2, 3]  # feature 1 never touched
    dense = tf.convert_to_tensor(grad).numpy()
    assert np.all(dense[1] == 0)
    # compare with the gradient of an equivalent dense computation
    w1 = tf.Variable(prior.w1.numpy())
    with tf.GradientTape() as tape:
        hidden = tf.nn.relu(tf.constant(features.toarray()) @ w1 + prior.b1)
        out = prior.output_layer(hidden)
        out = out / tf.maximum(tf.norm(out, axis=1, keepdims=True), 1.0)
        dense_loss = tf.reduce_sum(tf.square(out - target))
    np.testing.assert_allclose(dense, tape.gradient(dense_loss, w1).numpy(), rtol=1e-4,
                               atol=1e-6)
    assert float(loss) == pytest.approx(float(dense_loss), rel=1e-5)


def test_sparse_rows_matmul_equals_sparse_dense_matmul_and_its_gradient():
    """The CSR product and its transposed-product gradient against TensorFlow's COO
    sparse_dense_matmul on the full table: repeated and empty rows, absent features."""
    rng = np.random.default_rng(0)
    features = sp.random(60, 40, density=0.1, random_state=1, format="csr", dtype=np.float32)
    features = (features @ sp.diags((np.arange(40) != 7).astype(np.float32))).tocsr()
    features.eliminate_zeros()  # feature 7: no item has it
    table = tf.Variable(rng.standard_normal((40, 9)).astype(np.float32))
    upstream = tf.constant(rng.standard_normal((8, 9)).astype(np.float32))
    sparse = SparseRows.from_matrix(features)(tf.constant([5, 0, 5, 59, 13, 2, 2, 31]))
    with tf.GradientTape(persistent=True) as tape:
        got = sparse_rows_matmul(sparse, table)
        expected = tf.sparse.sparse_dense_matmul(sparse, table)
        got_loss, expected_loss = (tf.reduce_sum(x * upstream) for x in (got, expected))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
    grad = tape.gradient(got_loss, table)
    assert isinstance(grad, tf.IndexedSlices)
    present = np.unique(sparse.indices.numpy()[:, 1])
    np.testing.assert_array_equal(grad.indices.numpy(), present)  # each once, ascending
    np.testing.assert_allclose(tf.convert_to_tensor(grad).numpy(),
                               tape.gradient(expected_loss, table).numpy(), rtol=1e-5, atol=1e-6)


def test_sparse_rows_matmul_in_a_graph_without_rows_or_without_features():
    """A replica without pairs gives a batch of no rows, a batch of featureless items a
    transposed matrix of no rows: CPU's CSR matmul dies of SIGFPE on either inside a graph."""
    table = tf.Variable(np.arange(15, dtype=np.float32).reshape(5, 3))

    @tf.function
    def product_and_gradient(indices, values, shape):
        with tf.GradientTape() as tape:
            product = sparse_rows_matmul(tf.SparseTensor(indices, values, shape), table)
            loss = tf.reduce_sum(product)
        return product, tf.convert_to_tensor(tape.gradient(loss, table))

    no_entries = (tf.zeros([0, 2], tf.int64), tf.zeros([0]))
    for rows in (0, 2):
        product, gradient = product_and_gradient(*no_entries, tf.constant([rows, 5], tf.int64))
        np.testing.assert_array_equal(product.numpy(), np.zeros((rows, 3)))
        np.testing.assert_array_equal(gradient.numpy(), np.zeros((5, 3)))
    product, gradient = product_and_gradient(tf.constant([[1, 3], [1, 4]], tf.int64),
                                             tf.constant([1.0, 2.0]), tf.constant([2, 5], tf.int64))
    np.testing.assert_array_equal(product.numpy(), [[0, 0, 0], [33, 36, 39]])
    np.testing.assert_array_equal(gradient.numpy()[3:], [[1, 1, 1], [2, 2, 2]])


def test_feature_prior_dropout_only_in_training():
    features = sp.csr_matrix(np.ones((4, 6), np.float32))
    prior = FeaturePrior(dim=3, n_features=6, hidden=64, dropout=0.5, seed=0)
    sparse = SparseRows.from_matrix(features)(tf.range(4))
    a, b = prior(sparse, training=False), prior(sparse, training=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = prior(sparse, training=True)
    assert not np.allclose(a.numpy(), c.numpy())


def test_sparse_rows_gather_matches_scipy():
    matrix = sp.random(50, 20, density=0.1, random_state=0, format="csr", dtype=np.float32)
    rows = SparseRows.from_matrix(matrix)
    picked = np.array([3, 0, 3, 49, 17])
    dense = tf.sparse.to_dense(tf.sparse.reorder(rows(tf.constant(picked)))).numpy()
    np.testing.assert_array_equal(dense, matrix[picked].toarray())
