"""The per-user 60/20/20 split against an independent plain-Python implementation."""


import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from cml_tf.data import Interactions
from cml_tf.data.split import order_by_user_key_item, split_per_user


def reference_split(rows, seed, min_interactions=5):
    """DESIGN.md's protocol written out per user, in plain Python.

    rows: {user: sorted list of items}. The random order of a user's items is the ascending order
    of the keys np.random.default_rng(seed).random(nnz) drawn in CSR order (module docstring of
    cml_tf.data.split); everything else is ordinary Python.
    """
    nnz = sum(len(items) for items in rows.values())
    keys = iter(np.random.default_rng(seed).random(nnz).tolist())
    parts = {"train": set(), "valid": set(), "test": set()}
    for user in sorted(rows):
        items = rows[user]
        user_keys = [next(keys) for _ in items]
        n = len(items)
        if n < min_interactions:
            parts["train"].update((user, item) for item in items)
            continue
        ordered = [item for _, item in sorted(zip(user_keys, items))]
        n_train, n_valid = int(n * 3 / 5), int(n / 5)
        parts["train"].update((user, i) for i in ordered[:n_train])
        parts["valid"].update((user, i) for i in ordered[n_train:n_train + n_valid])
        parts["test"].update((user, i) for i in ordered[n_train + n_valid:])
    return parts


def as_pairs(matrix):
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def random_interactions(n_users, n_items, density, seed):
    matrix = sp.random(n_users, n_items, density=density, random_state=seed, format="csr")
    return Interactions(matrix, [f"u{i}" for i in range(n_users)],
                        [f"i{j}" for j in range(n_items)])


@settings(max_examples=40, deadline=None)
@given(n_users=st.integers(1, 40), n_items=st.integers(1, 60),
       density=st.floats(0.0, 0.6), seed=st.integers(0, 2**31 - 1))
def test_split_matches_plain_python_reference(n_users, n_items, density, seed):
    data = random_interactions(n_users, n_items, density, seed % 1000)
    rows = {u: data.matrix.indices[data.matrix.indptr[u]:data.matrix.indptr[u + 1]].tolist()
            for u in range(n_users)}
    expected = reference_split(rows, seed)
    split = split_per_user(data, seed=seed)
    assert as_pairs(split.train.matrix) == expected["train"]
    assert as_pairs(split.valid.matrix) == expected["valid"]
    assert as_pairs(split.test.matrix) == expected["test"]


@settings(max_examples=60, deadline=None)
@given(n_users=st.integers(1, 30), levels=st.sampled_from([1, 2, 5, 2**16, 2**40, 2**53]),
       user_scale=st.sampled_from([1, 2**40, 2**57]), seed=st.integers(0, 2**31 - 1))
def test_one_sort_orders_like_lexsort_even_when_keys_tie(n_users, levels, user_scale, seed):
    """The split's single uint64 sort gives np.lexsort((items, keys, users))'s order, also
    when keys are equal or differ only below the bits the sort key keeps (large user ids
    leave fewer: user_scale)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 12, n_users)
    ids = np.cumsum(rng.integers(1, user_scale, n_users, endpoint=True))  # increasing
    users = np.repeat(ids, counts)
    items = np.concatenate([rng.permutation(40)[:c] for c in counts]).astype(np.int32)
    keys = rng.integers(0, levels, len(users)) / levels
    expected = np.lexsort((items, keys, users))
    np.testing.assert_array_equal(order_by_user_key_item(users, keys, items), expected)


def test_split_sizes_per_user_and_small_users_train_only():
    data = random_interactions(300, 200, 0.05, 1)
    split = split_per_user(data, seed=7)
    n = data.user_counts()
    big = n >= 5
    assert np.array_equal(split.train.user_counts()[big], (n[big] * 3) // 5)
    assert np.array_equal(split.valid.user_counts()[big], n[big] // 5)
    assert np.array_equal(split.test.user_counts()[big], n[big] - (n[big] * 3) // 5 - n[big] // 5)
    assert np.array_equal(split.train.user_counts()[~big], n[~big])
    assert split.valid.user_counts()[~big].sum() == 0
    assert split.test.user_counts()[~big].sum() == 0
    total = split.train.matrix + split.valid.matrix + split.test.matrix
    assert (total != data.matrix).nnz == 0  # a partition: nothing lost, nothing doubled


def test_split_is_deterministic_and_seeded():
    data = random_interactions(200, 100, 0.1, 3)
    a, b, c = (split_per_user(data, seed=s) for s in (11, 11, 12))
    assert as_pairs(a.test.matrix) == as_pairs(b.test.matrix)
    assert as_pairs(a.test.matrix) != as_pairs(c.test.matrix)


def test_split_keeps_ids_and_weights():
    data = Interactions.from_pairs(["a"] * 6, list("pqrstu"), [1, 2, 3, 4, 5, 6])
    split = split_per_user(data, seed=0)
    for part in (split.train, split.valid, split.test):
        assert list(part.item_ids) == list("pqrstu")
    total = split.train.matrix + split.valid.matrix + split.test.matrix
    assert total.toarray().tolist() == [[1, 2, 3, 4, 5, 6]]


def test_citeulike_split_sizes(citeulike_dir):
    from cml_tf.data.citeulike import load_citeulike_t
    split = split_per_user(load_citeulike_t(citeulike_dir, with_features=False), seed=0)
    total = (split.train.n_interactions + split.valid.n_interactions
             + split.test.n_interactions)
    assert total == 134_860
    assert split.valid.n_interactions > 0.15 * total


def test_bad_fractions():
    data = random_interactions(5, 5, 0.5, 0)
    with pytest.raises(ValueError):
        split_per_user(data, train_fraction=0.9, valid_fraction=0.2)
