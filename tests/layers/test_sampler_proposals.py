"""The popularity proposal of the negative sampler: its alias table, its distribution, the
rejection of known positives, and the importance-weighted rank estimate built on it."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
import tensorflow as tf

from cml_tf.layers.sampler import (NegativeSampler, _fill_from_spares, alias_table,
                                   popularity_proposal)
from cml_tf.layers.warp import estimated_rank, warp_hinge


def skewed_matrix(n_users=300, n_items=60, seed=0):
    """Item k is liked with a probability that falls off like 1 / (k + 1)."""
    rng = np.random.default_rng(seed)
    like = rng.random((n_users, n_items)) < 0.6 / (np.arange(n_items) + 1.0) ** 0.7
    return sp.csr_matrix(like.astype(np.float32))


def test_alias_table_reproduces_the_distribution():
    q = popularity_proposal(np.array([0, 1, 5, 50, 0, 3, 200]), beta=0.8)
    prob, alias = alias_table(q)
    n = len(q)
    implied = prob.astype(np.float64) / n
    np.add.at(implied, alias, (1.0 - prob.astype(np.float64)) / n)
    np.testing.assert_allclose(implied, q, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(popularity_proposal(np.arange(5), 0.0), np.full(5, 0.2))


def test_popularity_draws_follow_the_proposal():
    matrix = skewed_matrix()
    sampler = NegativeSampler.from_matrix(matrix, seed=0, proposal="popularity", beta=1.0)
    counts = np.asarray(matrix.sum(axis=0)).ravel()
    q = popularity_proposal(counts, 1.0)
    np.testing.assert_allclose(sampler.probability.numpy(), q, rtol=1e-6)
    draws = sampler.draw([400_000]).numpy()
    observed = np.bincount(draws, minlength=len(q))
    assert scipy.stats.chisquare(observed, q * len(draws)).pvalue > 1e-3
    # A proposal 10% off is told apart by the same test.
    wrong = q * np.where(np.arange(len(q)) < 30, 1.1, 0.9)
    assert scipy.stats.chisquare(observed, wrong / wrong.sum() * len(draws)).pvalue < 1e-6


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_popularity_draws_never_return_a_known_positive(beta):
    matrix = skewed_matrix(seed=1)
    sampler = NegativeSampler.from_matrix(matrix, seed=1, proposal="popularity", beta=beta)
    users = tf.constant(np.repeat(np.arange(matrix.shape[0]), 40), tf.int32)
    items, valid = sampler(users, 20)
    known = sampler.is_known(tf.reshape(users, [-1, 1]), items).numpy()
    assert not np.any(known & valid.numpy())
    assert valid.numpy().mean() > 0.999


def test_accepted_draws_follow_the_proposal_restricted_to_unknown_items():
    matrix = skewed_matrix(seed=2)
    user = int(np.argmax(np.diff(matrix.indptr)))  # the most active user: much mass rejected
    sampler = NegativeSampler.from_matrix(matrix, seed=2, proposal="popularity", beta=1.0)
    items, valid = sampler(tf.fill([20_000], user), 20)
    assert valid.numpy().all()
    q = sampler.probability.numpy().astype(np.float64)
    known = matrix[user].indices
    np.testing.assert_allclose(sampler.known_mass.numpy()[user], q[known].sum(), rtol=1e-5)
    restricted = q.copy()
    restricted[known] = 0.0
    restricted /= restricted.sum()
    observed = np.bincount(items.numpy().ravel(), minlength=len(q))
    assert observed[known].sum() == 0
    keep = restricted > 0
    assert scipy.stats.chisquare(observed[keep],
                                 restricted[keep] * observed.sum()).pvalue > 1e-3


def exact_and_sampled_problem(seed=3):
    """One user (row 0) of a skewed matrix, fixed distances to every item, and the exact number
    of impostors among the items the user does not know."""
    matrix = skewed_matrix(seed=seed)
    rng = np.random.default_rng(seed)
    distances = rng.uniform(0.0, 4.0, matrix.shape[1]).astype(np.float32)
    margin, d_pos = 0.5, 1.2
    known = np.zeros(matrix.shape[1], bool)
    known[matrix[0].indices] = True
    exact = int(np.sum((margin + d_pos - distances > 0) & ~known))
    return matrix, distances, margin, d_pos, known, exact


def test_rank_estimate_is_unbiased_for_the_popularity_proposal():
    matrix, distances, margin, d_pos, _, exact = exact_and_sampled_problem()
    sampler = NegativeSampler.from_matrix(matrix, seed=3, proposal="popularity", beta=1.0)
    replicates, u = 40_000, 10
    users = tf.zeros([replicates], tf.int32)
    items, valid = sampler(users, u)
    factors = sampler.rank_factors(users, items, valid)
    impostor = (margin + d_pos - tf.gather(distances, items)) > 0
    estimates = estimated_rank(impostor, factors).numpy()
    error = estimates.std() / np.sqrt(replicates)
    assert abs(estimates.mean() - exact) < 4 * error, (estimates.mean(), exact, error)
    # warp_hinge uses the same estimate: log(floor(rank) + 1).
    _, _, weight = warp_hinge(tf.fill([replicates], -d_pos), -tf.gather(distances, items),
                              margin, matrix.shape[1], factors)
    np.testing.assert_allclose(weight.numpy(), np.log(np.floor(estimates) + 1), rtol=1e-5)


def test_rank_estimate_is_unbiased_for_a_masked_pool():
    matrix, distances, margin, d_pos, known, exact = exact_and_sampled_problem(seed=4)
    sampler = NegativeSampler.from_matrix(matrix, seed=4, proposal="popularity", beta=0.7)
    replicates, pool_size = 20_000, 16
    pools = tf.reshape(sampler.draw([replicates * pool_size]), [replicates, pool_size])
    factors = tf.stack([sampler.pool_factors(pool) for pool in tf.unstack(pools[:200])])
    np.testing.assert_allclose(
        factors.numpy(), 1.0 / (pool_size * sampler.probability.numpy()[pools.numpy()[:200]]),
        rtol=1e-6)
    factors = 1.0 / (pool_size * tf.gather(sampler.probability, pools))
    impostor = ((margin + d_pos - tf.gather(distances, pools)) > 0) & ~tf.gather(known, pools)
    estimates = estimated_rank(impostor, factors).numpy()
    error = estimates.std() / np.sqrt(replicates)
    assert abs(estimates.mean() - exact) < 4 * error, (estimates.mean(), exact, error)


def test_uniform_factors_give_the_papers_rank():
    matrix = skewed_matrix(seed=5)
    sampler = NegativeSampler.from_matrix(matrix, seed=5)
    users = tf.zeros([50], tf.int32)
    items, valid = sampler(users, 8)
    factors = sampler.rank_factors(users, items, valid).numpy()
    np.testing.assert_allclose(factors[valid.numpy()], matrix.shape[1] / 8)


def test_sampler_config_round_trips_with_its_tables(tmp_path):
    matrix = skewed_matrix(seed=6)
    sampler = NegativeSampler.from_matrix(matrix, seed=6, proposal="popularity", beta=0.5)
    clone = NegativeSampler.from_config(sampler.get_config())
    for source, target in zip(sampler.weights, clone.weights):
        target.assign(source)
    np.testing.assert_array_equal(clone.alias.numpy(), sampler.alias.numpy())
    assert clone.proposal == "popularity" and clone.beta == 0.5
    with pytest.raises(ValueError, match="proposal must be one of"):
        NegativeSampler(10, 3, proposal="zipf")
    with pytest.raises(ValueError, match="beta must be"):
        NegativeSampler(10, 3, proposal="popularity", beta=-1.0, n_users=2)


@pytest.mark.parametrize("proposal", ["uniform", "popularity"])
def test_spare_columns_are_sized_so_that_rows_rarely_need_a_redraw(proposal):
    sparse = sp.random(2000, 5000, density=0.002, random_state=0, format="csr")
    assert NegativeSampler.from_matrix(sparse, proposal=proposal).spare_columns(10) == 3
    matrix = skewed_matrix(n_users=2000, seed=7)  # users know about a tenth of the items
    sampler = NegativeSampler.from_matrix(matrix, seed=7, proposal=proposal, beta=1.0)
    spares = sampler.spare_columns(10)
    assert 3 < spares <= 40
    coo = matrix.tocoo()
    users = tf.constant(coo.row[np.random.default_rng(0).integers(0, matrix.nnz, 20_000)])

    def rows_short_of_spares(extra):
        drawn = sampler.draw([20_000, 10 + extra])
        ok = tf.logical_not(sampler.maybe_known(users[:, None], drawn))
        _, bad = _fill_from_spares(drawn[:, :10], ok[:, :10], drawn[:, 10:], ok[:, 10:])
        return bad.numpy().any(axis=1).mean()

    assert rows_short_of_spares(spares) < 1e-3  # the target is 1e-4 of the rows
    assert rows_short_of_spares(3) > 1e-2       # the fixed ceil(U / 4) would redraw often
