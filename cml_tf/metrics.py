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
"""

import math
from typing import Callable, Dict, Iterable, Optional

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

DEFAULT_KS = (10, 50, 100)
_BATCH_ELEMENTS = 1 << 24  # scores held at once: batch_users * n_items


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
      batch_size: users per batch; by default as many as fit 2^24 scores.
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
    return _masked_top_k(score_fn(tf.constant(batch, tf.int32)), tf.constant(excluded),
                         tf.constant(k)).numpy()


@tf.function(reduce_retracing=True)
def _masked_top_k(scores, excluded, k):
    scores = tf.cast(scores, tf.float32)
    scores = tf.tensor_scatter_nd_update(
        scores, excluded, tf.fill(tf.shape(excluded)[:1], tf.constant(-np.inf, tf.float32)))
    values, indices = tf.math.top_k(scores, k)
    # An excluded item can surface only when fewer than k items remain; never count it.
    return tf.where(tf.math.is_inf(values), -1, indices)


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
