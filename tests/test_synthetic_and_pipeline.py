"""Synthetic data (planted structure, determinism, size) and the tf.data input pipeline."""

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.data import Interactions
from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.data.synthetic import make_figure3, make_synthetic, planted_labels


def test_synthetic_is_deterministic_by_seed():
    a, b, c = make_synthetic(seed=4), make_synthetic(seed=4), make_synthetic(seed=5)
    assert (a.matrix != b.matrix).nnz == 0
    assert (a.item_features != b.item_features).nnz == 0
    assert (a.matrix != c.matrix).nnz > 0


def test_synthetic_has_planted_clusters_bridges_and_power_law():
    kwargs = dict(n_users=3000, n_items=1000, n_clusters=10, mean_per_user=20, noise=0.1,
                  bridge_fraction=0.2, seed=0)
    data = make_synthetic(**kwargs)
    item_cluster, home, second = planted_labels(**kwargs)
    users, items = data.pairs()
    in_own = (item_cluster[items] == home[users]) | (item_cluster[items] == second[users])
    assert in_own.mean() > 0.85               # noise 0.1 plus lucky global draws
    assert 0.15 < (second >= 0).mean() < 0.25  # bridge users (Figure 3's U3)
    bridges = second[users] >= 0
    assert (item_cluster[items][bridges] == second[users][bridges]).mean() > 0.3
    counts = np.sort(data.item_counts())[::-1]
    assert counts[:50].sum() > 0.15 * counts.sum()  # the top 5% of items: 3x a uniform share
    assert data.user_counts().min() >= 1
    # tags mostly come from the item's own cluster's vocabulary
    feature_items, tags = data.item_features.nonzero()
    assert (tags // 20 == item_cluster[feature_items]).mean() > 0.6


def test_synthetic_scales_to_millions_of_interactions():
    data = make_synthetic(n_users=100_000, n_items=50_000, n_clusters=50, mean_per_user=25,
                          with_features=False)
    assert data.n_interactions > 1_500_000


def test_scale_multiplies_users_and_items_and_nothing_else():
    small = make_synthetic(n_users=1200, n_items=800, n_clusters=8, scale=0.25, seed=2)
    same = make_synthetic(n_users=300, n_items=200, n_clusters=8, seed=2)
    assert small.matrix.shape == (300, 200)
    assert (small.matrix != same.matrix).nnz == 0
    assert (small.item_features != same.item_features).nnz == 0
    assert list(small.user_ids[:3]) == ["u0", "u1", "u2"] and small.item_ids[-1] == "i199"
    labels = planted_labels(n_users=1200, n_items=800, n_clusters=8, scale=0.25, seed=2)
    assert [len(x) for x in labels] == [200, 300, 300]
    with pytest.raises(ValueError, match="scale"):
        make_synthetic(scale=0)


def test_synthetic_matrix_is_the_merged_draws():
    """The generator's one-sort CSR equals scipy's COO build of the same draws."""
    from cml_tf.data.synthetic import _binary_csr  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(0)
    rows, columns = rng.integers(0, 50, 3000), rng.integers(0, 7, 3000)
    expected = sp.csr_matrix((np.ones(3000, np.float32), (rows, columns)), shape=(60, 7))
    expected.data[:] = 1.0
    got = _binary_csr(rows, columns, 60, 7)
    assert got.has_canonical_format and got.dtype == np.float32
    assert (got != expected).nnz == 0 and got.nnz == expected.nnz


def test_synthetic_rejects_bad_specs():
    with pytest.raises(ValueError, match="n_clusters"):
        make_synthetic(n_items=5, n_clusters=10)
    with pytest.raises(ValueError, match="noise"):
        make_synthetic(noise=1.5)


def test_figure3_groups():
    data = make_figure3(n_per_group=4)
    v1, v2 = data.item_index(["v1", "v2"])
    likes = data.matrix.toarray() > 0
    for group, expected in (("U1", (True, False)), ("U2", (False, True)), ("U3", (True, True))):
        rows = data.user_index([f"{group}_{n}" for n in range(4)])
        assert np.all(likes[rows][:, [v1, v2]] == expected)


def epoch_pairs(dataset):
    return np.concatenate([np.stack([u.numpy(), i.numpy()], 1) for u, i in dataset])


def test_pipeline_covers_every_pair_once_per_epoch_in_a_new_order():
    data = make_synthetic(n_users=200, n_items=100, seed=2, with_features=False)
    dataset = positive_pairs_dataset(data, batch_size=64, seed=9)
    assert int(dataset.cardinality()) == -(-data.n_interactions // 64)
    first, second = epoch_pairs(dataset), epoch_pairs(dataset)
    users, items = data.pairs()
    expected = sorted(zip(users.tolist(), items.tolist()))
    assert sorted(map(tuple, first.tolist())) == expected
    assert sorted(map(tuple, second.tolist())) == expected
    assert not np.array_equal(first, second)
    again = epoch_pairs(positive_pairs_dataset(data, batch_size=64, seed=9))
    assert np.array_equal(first, again)  # same seed, same first epoch
    # One repeated iterator (what the models' fit reads) also gives whole passes, each new.
    n = int(dataset.cardinality())
    repeated = epoch_pairs(dataset.repeat().take(3 * n)).reshape(3, -1, 2)
    for one_pass in repeated:
        assert sorted(map(tuple, one_pass.tolist())) == expected
    assert not np.array_equal(repeated[0], repeated[1])
    assert not np.array_equal(repeated[1], repeated[2])


def test_pipeline_batches_are_full_but_the_last():
    data = make_synthetic(n_users=300, n_items=200, n_clusters=5, with_features=False, seed=2)
    dataset = positive_pairs_dataset(data, batch_size=100, seed=1)
    sizes = [(int(users.shape[0]), int(items.shape[0])) for users, items in dataset]
    rest = data.n_interactions % 100 or 100
    assert sizes == [(100, 100)] * (len(sizes) - 1) + [(rest, rest)]
    assert all(spec.dtype == tf.int32 and spec.shape.as_list() == [None]
               for spec in dataset.element_spec)


def test_pipeline_runs_without_tf_data_autotuning():
    """Its teardown stalls made every Keras epoch boundary slow (pipeline module docstring)."""
    data = make_synthetic(n_users=50, n_items=40, seed=2, with_features=False)
    dataset = positive_pairs_dataset(data, batch_size=16, seed=0)
    assert dataset.options().autotune.enabled is False


def test_pipeline_without_shuffle_and_bad_batch():
    data = Interactions.from_pairs(["a", "a", "b"], ["x", "y", "x"])
    pairs = epoch_pairs(positive_pairs_dataset(data, batch_size=2, shuffle=False))
    assert pairs.tolist() == [[0, 0], [0, 1], [1, 0]]
    with pytest.raises(ValueError, match="batch_size"):
        positive_pairs_dataset(data, batch_size=0)


def test_interactions_merge_duplicates_and_print():
    data = Interactions.from_pairs(["u1", "u1", "u2"], ["i1", "i1", "i2"])
    assert data.n_interactions == 2
    assert data.matrix[0, 0] == 2.0
    text = repr(data)
    assert "2 users" in text and "2 items" in text and "2 interactions" in text
    assert "density 50" in text
    assert data.user_index(["u2", "nobody"]).tolist() == [1, -1]
    assert isinstance(data.user_ids[0], str)
