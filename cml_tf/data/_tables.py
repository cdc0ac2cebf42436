"""Vectorised building blocks shared by the loaders: id factorisation, binary matrices, filters.

Everything here works on whole numpy/pandas arrays (no Python loop over rows), so the same code
serves 100k and 20M interactions.
"""

import logging
from typing import Optional, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions

log = logging.getLogger(__name__)


def factorize(values, sort: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``(codes, raw_ids)``: int64 codes into ``raw_ids`` (a numpy str array).

    ``sort=True`` orders ids by value (numeric order for integer columns); ``sort=False`` keeps
    the order of first appearance.
    """
    if not isinstance(values, (pd.Series, pd.Index)):
        values = np.asarray(values)
    codes, uniques = pd.factorize(values, sort=sort)
    uniques = np.asarray(uniques)
    if uniques.dtype.kind != "U":
        uniques = uniques.astype(str)
    return codes.astype(np.int64, copy=False), uniques


def binary_matrix(rows: np.ndarray, cols: np.ndarray, shape: Tuple[int, int]) -> sp.csr_matrix:
    """A CSR float32 matrix with 1 at every (row, col); repeated pairs collapse to a single 1."""
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def keep_rows_with_more_than(matrix: sp.csr_matrix, threshold: Optional[int]) -> np.ndarray:
    """Indices of rows with more than ``threshold`` stored entries (all rows when None)."""
    counts = np.diff(matrix.indptr)
    if threshold is None:
        return np.arange(matrix.shape[0])
    return np.flatnonzero(counts > threshold)


def build_binary(users, items, *, sort_ids: bool, name: str,
                 min_user_count: Optional[int] = None,
                 user_filter: str = "", empty_message: str = "") -> Interactions:
    """Binary :class:`Interactions` from parallel raw-id arrays, with an optional user filter.

    Args:
      users, items: raw ids of the positive pairs (already filtered by the caller's value rule).
      sort_ids: order ids by value (True) or by first appearance (False).
      name: the data set's label.
      min_user_count: keep users with MORE than this many distinct items (None: keep all).
      user_filter: how to name that filter in the error when it removes every user, e.g.
        ``"more than 10 positives (min_user_positives=10)"``.
      empty_message: the error when there is no pair at all (e.g. which value filter emptied it).

    Items that no kept user interacted with are dropped. Raises :class:`DataError` naming the
    filter that left nothing.
    """
    if len(users) == 0:
        raise DataError(empty_message or f"{name}: no interactions")
    rows, user_ids = factorize(users, sort_ids)
    cols, item_ids = factorize(items, sort_ids)
    return build_binary_from_codes(rows, user_ids, cols, item_ids, name=name,
                                   min_user_count=min_user_count, user_filter=user_filter)


def build_binary_from_codes(rows: np.ndarray, user_ids: np.ndarray, cols: np.ndarray,
                            item_ids: np.ndarray, *, name: str,
                            min_user_count: Optional[int] = None,
                            user_filter: str = "") -> Interactions:
    """:func:`build_binary` for pairs already coded as indices into ``user_ids``/``item_ids``."""
    user_ids = np.asarray(user_ids).astype(str)
    item_ids = np.asarray(item_ids).astype(str)
    matrix = binary_matrix(rows, cols, (len(user_ids), len(item_ids)))
    n_pairs = len(rows)
    if matrix.nnz < n_pairs:
        log.info("%s: %d repeated user-item pairs collapsed", name, n_pairs - matrix.nnz)
    keep = keep_rows_with_more_than(matrix, min_user_count)
    if len(keep) == 0:
        raise DataError(f"{name}: no users with {user_filter or f'more than {min_user_count}'} "
                        f"remain (of {len(user_ids):,} users)")
    if len(keep) < len(user_ids):
        log.info("%s: kept %d of %d users (%s)", name, len(keep), len(user_ids),
                 user_filter or f"more than {min_user_count}")
        matrix = matrix[keep]
        user_ids = user_ids[keep]
    used = np.flatnonzero(np.bincount(matrix.indices, minlength=matrix.shape[1]))
    if len(used) < matrix.shape[1]:
        matrix = matrix[:, used]
        item_ids = item_ids[used]
    return Interactions(matrix, user_ids, item_ids, name=name)

