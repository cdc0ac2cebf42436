"""WRMF: the ALS solve against a numpy closed form, a sweep, learning, save/load."""

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from zoo_helpers import (assert_recommend_excludes_known, assert_round_trip,
                         assert_vectors_score, planted_split, recall_vs_popularity)

from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.models import WRMF
from cml_tf.models.wrmf import als_solve


def numpy_closed_form(r, fixed, alpha, regularization):
    """x_u = (Y^T C_u Y + lambda I)^-1 Y^T C_u p_u with dense C_u = diag(1 + alpha r_u)."""
    r = r.toarray()
    d = fixed.shape[1]
    out = np.zeros((r.shape[0], d))
    for u in range(r.shape[0]):
        c = 1.0 + alpha * r[u]
        p = (r[u] > 0).astype(float)
        a = fixed.T @ (c[:, None] * fixed) + regularization * np.eye(d)
        out[u] = np.linalg.solve(a, fixed.T @ (c * p))
    return out


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    r = sp.random(30, 25, density=0.2, random_state=1, format="csr", dtype=np.float32)
    r.data = rng.integers(1, 4, r.nnz).astype(np.float32)  # counts, so c varies
    r = r.tolil()
    r[3] = 0  # a row without observations
    r = sp.csr_matrix(r)
    r.eliminate_zeros()
    return r, rng.normal(size=(25, 6)).astype(np.float32)


@pytest.mark.parametrize("solver, steps, tolerance", [("exact", 0, 1e-4), ("cg", 40, 1e-3)])
def test_solve_matches_numpy_closed_form(small, solver, steps, tolerance):
    r, fixed = small
    expected = numpy_closed_form(r, fixed.astype(np.float64), 2.0, 0.1)
    got = als_solve(fixed, r.indptr, r.indices, r.data, 2.0, 0.1, solver=solver,
                    cg_steps=max(steps, 1), block_rows=7).numpy()
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


def test_one_train_step_is_one_alternating_sweep(small):
    r, _ = small
    model = WRMF(30, 25, dim=6, alpha=2.0, regularization=0.1, solver="exact",
                 known_positives=r, seed=0)
    y0 = model.item_factors.numpy().astype(np.float64)
    model.compile(optimizer="sgd")
    model.fit(positive_pairs_dataset_of(r), epochs=1, verbose=0)
    x1 = numpy_closed_form(r, y0, 2.0, 0.1)
    y1 = numpy_closed_form(sp.csr_matrix(r.T), x1, 2.0, 0.1)
    np.testing.assert_allclose(model.user_factors.numpy(), x1, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.item_factors.numpy(), y1, rtol=1e-3, atol=1e-4)
    assert int(model.sweeps.numpy()) == 1


def positive_pairs_dataset_of(r):
    from cml_tf.data.interactions import Interactions
    data = Interactions(r, [f"u{i}" for i in range(r.shape[0])],
                        [f"i{j}" for j in range(r.shape[1])])
    return positive_pairs_dataset(data, batch_size=10**6)


def test_wrmf_learns_planted_structure_and_round_trips(tmp_path):
    split = planted_split()
    model = WRMF.from_interactions(split.train, dim=16, alpha=10.0, regularization=0.1, seed=0)
    model.compile(optimizer="sgd")
    history = model.fit(positive_pairs_dataset(split.train, 10**6), epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] <= losses[1] + 1e-6  # ALS never increases the objective (CG: nearly)
    ours, popular = recall_vs_popularity(model, split)
    assert ours > 2 * popular, (ours, popular)  # well above popularity
    assert_vectors_score(model)
    assert_recommend_excludes_known(model, split.train)
    clone = assert_round_trip(model, tmp_path)
    np.testing.assert_array_equal(clone.known_items(tf.constant([0])).flat_values.numpy(),
                                  split.train.matrix[0].indices)
