"""Synthetic implicit feedback with planted structure: the embedded default data set.

The generative story (all vectorised, deterministic by ``seed``):

* Items are split into ``n_clusters`` taste clusters. Within a cluster, item popularity follows a
  power law: the item of within-cluster rank ``r`` (1-based) has weight
  ``r ** -popularity_exponent``.
* Every user has a home cluster; a fraction ``bridge_fraction`` of users also has a second cluster
  and draws from both (the paper's Figure 3: users who like both v1 and v2 tie the two together).
* A user's number of interactions is ``min_per_user`` plus a geometric draw with mean
  ``mean_per_user - min_per_user``. Each interaction comes from one of the user's clusters with
  probability ``1 - noise`` and otherwise from the global popularity of all items.
* Optional item features: every item carries ``tags_per_item`` tags, each drawn with probability
  ``1 - feature_noise`` from its cluster's own tag vocabulary (``tags_per_cluster`` tags) and
  otherwise from the whole vocabulary: a bag-of-tags like citeulike-t's.

Duplicate draws are merged, so the interaction count is a little below the number of draws.

``scale`` multiplies ``n_users`` and ``n_items`` (rounded; ``n_clusters`` and the per-user
counts stay): a large configuration such as ``configs/synthetic_echonest.py`` runs scaled down
through the same code. Every step is a whole-array numpy operation (no loop over users or
items), so EchoNest's shape (767k users, 260k items, 7.3M interactions) draws in seconds.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp

from cml_tf.data.interactions import Interactions


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 2000
    n_items: int = 1000
    n_clusters: int = 10
    mean_per_user: float = 25.0
    min_per_user: int = 5
    popularity_exponent: float = 0.8
    bridge_fraction: float = 0.2
    noise: float = 0.1
    with_features: bool = True
    tags_per_item: int = 5
    tags_per_cluster: int = 20
    feature_noise: float = 0.3
    seed: int = 0
    scale: float = 1.0  # multiplies n_users and n_items


def make_synthetic(spec: SyntheticSpec = SyntheticSpec(), **overrides) -> Interactions:
    """Draws a data set from the module's generative story; ``overrides`` replace spec fields.

    Returns Interactions named "synthetic" whose ``user_ids`` are ``u<index>`` and ``item_ids``
    ``i<index>``; the planted labels are available from :func:`planted_labels`.
    """
    spec = _scaled(dataclasses.replace(spec, **overrides))
    rng = np.random.default_rng(spec.seed)
    item_cluster, user_home, user_second = _assignments(spec, rng)

    # Per-cluster popularity, concatenated into one table of cumulative distributions.
    order = np.argsort(item_cluster, kind="stable")
    cluster_sizes = np.bincount(item_cluster, minlength=spec.n_clusters)
    offsets = np.concatenate([[0], np.cumsum(cluster_sizes)])
    within_rank = np.arange(spec.n_items) - offsets[item_cluster[order]] + 1
    weight = within_rank.astype(np.float64) ** -spec.popularity_exponent
    cluster_total = np.bincount(item_cluster[order], weights=weight, minlength=spec.n_clusters)
    cdf = np.cumsum(weight / cluster_total[item_cluster[order]])  # 1, 2, ..., n_clusters

    extra = spec.mean_per_user - spec.min_per_user
    counts = spec.min_per_user + (rng.geometric(1.0 / (1.0 + extra), spec.n_users) - 1
                                  if extra > 0 else np.zeros(spec.n_users, np.int64))
    counts = np.minimum(counts, spec.n_items)
    users = np.repeat(np.arange(spec.n_users), counts)
    draws = len(users)

    use_second = (user_second[users] >= 0) & (rng.random(draws) < 0.5)
    cluster = np.where(use_second, user_second[users], user_home[users])
    u = rng.random(draws)
    position = np.searchsorted(cdf, cluster + u, side="right")
    items = order[np.minimum(position, spec.n_items - 1)]

    noisy = rng.random(draws) < spec.noise
    global_cdf = np.cumsum(weight) / weight.sum()
    global_pos = np.searchsorted(global_cdf, rng.random(int(noisy.sum())), side="right")
    items[noisy] = order[np.minimum(global_pos, spec.n_items - 1)]

    kwargs = {}
    if spec.with_features:
        kwargs["item_features"], kwargs["feature_names"] = _tags(spec, item_cluster, rng)
    return Interactions(_binary_csr(users, items, spec.n_users, spec.n_items),
                        _ids("u", spec.n_users), _ids("i", spec.n_items), name="synthetic",
                        **kwargs)


def planted_labels(spec: SyntheticSpec = SyntheticSpec(), **overrides):
    """(item_cluster, user_home, user_second) of the data :func:`make_synthetic` draws.

    ``user_second`` is -1 for users with one cluster only.
    """
    spec = _scaled(dataclasses.replace(spec, **overrides))
    return _assignments(spec, np.random.default_rng(spec.seed))


def _scaled(spec):
    """The spec with ``scale`` applied (and checked)."""
    if not spec.scale > 0:
        raise ValueError(f"scale must be > 0, got {spec.scale}")
    if spec.scale != 1:
        spec = dataclasses.replace(spec, n_users=max(1, round(spec.n_users * spec.scale)),
                                   n_items=max(1, round(spec.n_items * spec.scale)), scale=1.0)
    _check(spec)
    return spec


def _binary_csr(rows, columns, n_rows, n_columns):
    """The 0/1 CSR matrix with a one at every (row, column) given; repeated pairs merge.

    One sort of the int64 keys ``row * n_columns + column``: scipy's COO conversion with its
    duplicate sum costs about three times as much at 7M pairs, and numpy 2's hash-based
    ``np.unique`` twenty times."""
    keys = np.sort(rows.astype(np.int64) * n_columns + columns)
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    indptr = np.searchsorted(keys, np.arange(n_rows + 1, dtype=np.int64) * n_columns)
    return sp.csr_matrix((np.ones(len(keys), np.float32), (keys % n_columns).astype(np.int32),
                          indptr), shape=(n_rows, n_columns))


def _ids(prefix, n):
    """``prefix + str(index)`` for every index below n (a narrow dtype: ``astype(str)`` is
    22 characters wide and four times slower)."""
    return np.char.add(prefix, np.arange(n).astype(f"U{len(str(max(n - 1, 0)))}"))


def _assignments(spec, rng):
    item_cluster = rng.permutation(np.arange(spec.n_items) % spec.n_clusters)
    user_home = rng.integers(0, spec.n_clusters, spec.n_users)
    bridge = rng.random(spec.n_users) < spec.bridge_fraction
    shift = rng.integers(1, max(spec.n_clusters, 2), spec.n_users)
    user_second = np.where(bridge & (spec.n_clusters > 1), (user_home + shift) % spec.n_clusters,
                           -1)
    return item_cluster, user_home, user_second


def _tags(spec, item_cluster, rng):
    n_tags = spec.tags_per_cluster * spec.n_clusters
    rows = np.repeat(np.arange(spec.n_items), spec.tags_per_item)
    own = item_cluster[rows] * spec.tags_per_cluster + rng.integers(
        0, spec.tags_per_cluster, len(rows))
    anywhere = rng.integers(0, n_tags, len(rows))
    tags = np.where(rng.random(len(rows)) < spec.feature_noise, anywhere, own)
    features = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, tags)),
                             shape=(spec.n_items, n_tags))
    features.data[:] = 1.0
    names = np.array([f"c{t // spec.tags_per_cluster}_tag{t % spec.tags_per_cluster}"
                      for t in range(n_tags)])
    return features, names


def make_figure3(n_per_group: int = 50, n_background_items: int = 200,
                 n_background_users: int = 300, seed: int = 0) -> Interactions:
    """The paper's Figure 3 in data: groups U1 (like v1), U2 (like v2), U3 (like both).

    Items ``v1`` and ``v2`` are the planted pair. A background population keeps the space
    populated: background users each like five items of one of 10 background clusters, so
    "unrelated items" exist to compare distances against.
    """
    rng = np.random.default_rng(seed)
    users, items = [], []
    bg_cluster = np.arange(n_background_items) % 10
    for group, liked in (("U1", ["v1"]), ("U2", ["v2"]), ("U3", ["v1", "v2"])):
        for n in range(n_per_group):
            for item in liked:
                users.append(f"{group}_{n}")
                items.append(item)
    for n in range(n_background_users):
        c = rng.integers(10)
        for j in rng.choice(np.flatnonzero(bg_cluster == c), 5, replace=False):
            users.append(f"bg_{n}")
            items.append(f"b{j}")
    return Interactions.from_pairs(users, items, name="figure3")


def _check(spec):
    if spec.n_users < 1 or spec.n_items < 1 or spec.n_clusters < 1:
        raise ValueError("n_users, n_items and n_clusters must be positive")
    if spec.n_clusters > spec.n_items:
        raise ValueError(f"n_clusters ({spec.n_clusters}) > n_items ({spec.n_items})")
    if spec.min_per_user < 1 or spec.mean_per_user < spec.min_per_user:
        raise ValueError("need 1 <= min_per_user <= mean_per_user")
    for name in ("bridge_fraction", "noise", "feature_noise"):
        if not 0.0 <= getattr(spec, name) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]")
