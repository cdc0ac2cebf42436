"""Top-K ranking metrics over all items, with known items excluded (paper section 4.2).

For a user u with held-out items H_u (validation or test), known items E_u (excluded from the
ranking: train for validation, train + validation for test) and top-K list T_u ranked by score
over all other items:

* Recall@K    = |T_u ∩ H_u| / |H_u|
* Precision@K = |T_u ∩ H_u| / K
* NDCG@K      = sum_{r < K, T_u[r] in H_u} 1 / log2(r + 2)
                / sum_{r < min(K, |H_u|)} 1 / log2(r + 2)

each averaged over the users with at least one held-out item. ``|H_u|`` includes held-out items
the model has no index for (``unseen``): they can never be ranked, so they count as misses.

The ranking is exact over all items, ties to the lower item index (``tf.math.top_k``'s order).
At EchoNest's size (510k test users x 260k items) the top-K of 1.3e11 scores costs more than
the scores' matmul, so a large catalogue is ranked in groups (:func:`grouped_top_k`): the top-K
items lie within the K groups of G consecutive items with the largest maxima, so a top-K over
the J/G group maxima and one over the K*G items of those groups give the same answer as a
top-K over all J (three times faster at J = 260k).
Users are scored in batches of about 2^26 scores (256 MB).
"""

import functools
import math
from typing import Callable, Dict, Iterable, Optional

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

DEFAULT_KS = (10, 50, 100)
_BATCH_ELEMENTS = 1 << 26  # scores held at once: batch_users * n_items (256 MB)


def ranking_metrics(score_fn: Callable[[tf.Tensor], tf.Tensor], heldout: sp.csr_matrix,
                    exclude: Optional[sp.csr_matrix] = None, unseen: Optional[np.ndarray] = None,
                    ks: Iterable[int] = DEFAULT_KS, batch_size: Optional[int] = None,
                    users: Optional[np.ndarray] = None,
                    return_per_user: bool = False) -> Dict[str, float]:
    """Recall / NDCG / Precision at each K, computed in batches in TensorFlow.

    Args:
      score_fn: maps an int32 vector of user indices to float scores [batch, n_items], higher is
        better (for CML: minus the squared distance).
      heldout: users x items CSR of held-out positives.
      exclude: users x items CSR of items to leave out of every ranking (known items).
      unseen: per-user count of held-out items without an item index (count as misses).
      ks: cut-offs; each must be <= n_items.
      batch_size: users per batch; by default as many as fit 2^26 scores (at most 4096).
      users: evaluate only these user indices (default: every user with a held-out item).
      return_per_user: also return ``{"per_user": {metric: array}, "user_index": array}``.

    Returns:
      ``{"recall@10": ..., "ndcg@10": ..., "precision@10": ..., ..., "users": n}``.
    """
    ks = sorted({int(k) for k in ks})
    n_users, n_items = heldout.shape
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive, got {ks}")
    if ks[-1] > n_items:
        raise ValueError(f"K={ks[-1]} is larger than the number of items ({n_items})")
    heldout = sp.csr_matrix(heldout)
    exclude = sp.csr_matrix((n_users, n_items)) if exclude is None else sp.csr_matrix(exclude)
    unseen = np.zeros(n_users, np.int64) if unseen is None else np.asarray(unseen, np.int64)
    totals = np.diff(heldout.indptr) + unseen
    if users is None:
        users = np.flatnonzero(totals > 0)
    users = np.asarray(users, np.int64)
    batch_size = batch_size or max(1, min(4096, _BATCH_ELEMENTS // max(n_items, 1)))
    per_user = {f"{name}@{k}": np.zeros(len(users)) for k in ks
                for name in ("recall", "ndcg", "precision")}
    k_max = ks[-1]
    discounts = 1.0 / np.log2(np.arange(k_max) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        top = _top_k(score_fn, batch, exclude, k_max)  # [b, k_max]
        hits = _membership(heldout, batch, top)       # [b, k_max] bool
        cum_hits = np.cumsum(hits, axis=1)
        cum_gain = np.cumsum(hits * discounts, axis=1)
        total = totals[batch].astype(np.float64)
        for k in ks:
            rows = slice(start, start + len(batch))
            per_user[f"recall@{k}"][rows] = cum_hits[:, k - 1] / total
            per_user[f"precision@{k}"][rows] = cum_hits[:, k - 1] / k
            ideal_k = ideal[np.minimum(total, k).astype(int)]
            per_user[f"ndcg@{k}"][rows] = cum_gain[:, k - 1] / ideal_k
    result = {name: float(values.mean()) if len(values) else math.nan
              for name, values in per_user.items()}
    result["users"] = int(len(users))
    if return_per_user:
        result["per_user"] = per_user
        result["user_index"] = users
    return result


def _top_k(score_fn, batch: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    rows = exclude[batch]
    row_of = np.repeat(np.arange(len(batch)), np.diff(rows.indptr))
    excluded = np.stack([row_of, rows.indices], axis=1).astype(np.int32)
    scores = tf.cast(score_fn(tf.constant(batch, tf.int32)), tf.float32)
    return _masked_top_k(exclude.shape[1], k)(scores, tf.constant(excluded)).numpy()


@functools.lru_cache(maxsize=64)
def _masked_top_k(n_items: int, k: int):
    """The compiled top-k for one catalogue size and k (static: they fix the grouping)."""
    size = group_size(n_items, k)

    @tf.function(input_signature=[tf.TensorSpec([None, n_items], tf.float32),
                                  tf.TensorSpec([None, 2], tf.int32)])
    def masked_top_k(scores, excluded):
        # Padded first: the pad's new buffer then takes the exclusions in place.
        scores = tf.pad(scores, [[0, 0], [0, -n_items % size]], constant_values=-np.inf)
        scores = tf.tensor_scatter_nd_update(
            scores, excluded, tf.fill(tf.shape(excluded)[:1], tf.constant(-np.inf, tf.float32)))
        values, indices = grouped_top_k(scores, k, size)
        # An excluded item can surface only when fewer than k items remain; never count it.
        return tf.where(tf.math.is_inf(values), -1, indices)

    return masked_top_k


def group_size(n_items: int, k: int) -> int:
    """G for :func:`grouped_top_k`: the power of two nearest sqrt(J / k), which balances its
    two top-Ks (J/G group maxima, K*G candidates); 1 (a plain top-K) below 4 or when the K
    groups would hold most items."""
    size = 2 ** round(math.log2(max(n_items / max(k, 1), 1.0)) / 2)
    return size if size >= 4 and 2 * k * size <= n_items else 1


def grouped_top_k(scores, k: int, size: int):
    """``tf.math.top_k(scores, k)`` (values and indices, ties to the lower index) from groups
    of ``size`` consecutive items; ``scores``' row length must be a multiple of ``size``.

    Why it is exact: with m_1 >= m_2 >= ... the group maxima, the k groups of the k largest
    maxima hold k distinct items >= m_k, so the k-th largest score v_k is >= m_k, and every
    item of the top k (>= v_k) lies in a group whose maximum is >= m_k: one of those k groups.
    Ties: among groups of equal maximum top-K keeps the lower group, whose items have the
    lower indices, and the candidates stay in item order, so ties resolve as over all items.
    """
    if size == 1:
        return tf.math.top_k(scores, k)
    rows = tf.shape(scores)[0]
    groups = tf.reshape(scores, [rows, -1, size])
    _, best = tf.math.top_k(tf.reduce_max(groups, axis=2), k)
    best = tf.sort(best, axis=1)
    candidates = tf.reshape(tf.gather(groups, best, batch_dims=1), [rows, k * size])
    values, position = tf.math.top_k(candidates, k)
    return values, tf.gather(best, position // size, batch_dims=1) * size + position % size


def _membership(heldout: sp.csr_matrix, batch: np.ndarray, top: np.ndarray) -> np.ndarray:
    """hits[r, j] = top[r, j] is a held-out item of user batch[r] (binary search on pair keys)."""
    rows = heldout[batch]
    n_items = heldout.shape[1]
    row_of = np.repeat(np.arange(len(batch), dtype=np.int64), np.diff(rows.indptr))
    keys = row_of * n_items + rows.indices  # sorted: rows ascending, indices sorted per row
    if len(keys) == 0:
        return np.zeros(top.shape, bool)
    query = np.arange(len(batch), dtype=np.int64)[:, None] * n_items + top
    position = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (keys[position] == query) & (top >= 0)
