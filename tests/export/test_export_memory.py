"""What keeps a wide export (EASE's n_items x n_items item vectors) at one copy of its vectors:
the exact index and the module share one variable, variables are written a block at a time,
and the exact reference widens to float64 a block at a time. Each must give what the plain
computation gives."""

import numpy as np
import pytest
import tensorflow as tf

from cml_tf.layers.retrieval import BruteForce
from cml_tf.layers.retrieval.common import row_sq_norms, rows_variable
from cml_tf.serving.check import exact_scores


def test_an_exact_export_stores_its_item_vectors_once(exports, trained):
    _, _, spec = trained
    path = exports["brute_force"][0] / "variables" / "variables"
    shaped = [name for name, shape in tf.train.list_variables(str(path))
              if shape == list(spec.item_vectors.shape)]
    assert len(shaped) == 1, shaped
    np.testing.assert_array_equal(tf.train.load_variable(str(path), shaped[0]),
                                  spec.item_vectors)


@pytest.mark.parametrize("cells", [1, 7, 64, 1 << 24])
def test_rows_variable_and_norms_in_blocks(cells):
    values = np.random.default_rng(0).normal(size=(23, 5)).astype(np.float32)
    for given in (values, tf.constant(values)):
        variable = rows_variable(given, "rows", block_cells=cells)
        np.testing.assert_array_equal(variable.numpy(), values)
        np.testing.assert_allclose(row_sq_norms(variable, block_cells=cells).numpy(),
                                   (values ** 2).sum(1), rtol=1e-6)


def test_the_index_shares_its_rows_only_when_row_i_is_identifier_i():
    values = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    shared = BruteForce(k=2).index(values).candidate_rows()
    np.testing.assert_array_equal(shared.numpy(), values)
    assert BruteForce(k=2).index(values, tf.range(10, 16)).candidate_rows() is None


@pytest.mark.parametrize("metric", ["dot_product", "squared_l2"])
@pytest.mark.parametrize("cells", [1, 5, 7, 1 << 24])
def test_exact_scores_in_blocks_equal_the_direct_float64_scores(metric, cells):
    rng = np.random.default_rng(2)
    q, v = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(23, 5)).astype(np.float32)
    q64, v64 = q.astype(np.float64), v.astype(np.float64)
    expected = q64 @ v64.T if metric == "dot_product" else \
        -((q64[:, None, :] - v64[None]) ** 2).sum(-1)
    np.testing.assert_allclose(exact_scores(q, v, metric, block_cells=cells), expected,
                               atol=1e-9)
