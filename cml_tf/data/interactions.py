"""The implicit-feedback container every loader returns.

An :class:`Interactions` is a user x item CSR matrix ``R`` with ``R[u, i] > 0`` when user ``u``
interacted with item ``i`` (the value is a weight: 1 for a plain like, a play count, ...), plus the
maps between raw ids (always strings, as a person sees them) and contiguous integer indices (what
the model sees). Optional item features are an items x features sparse matrix with feature names.
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

from cml_tf.data.errors import DataError


def _as_str_array(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind != "U":
        ids = ids.astype(str)
    return ids


@dataclasses.dataclass(frozen=True, eq=False)
class Interactions:
    """Implicit feedback: ``matrix`` (users x items CSR, float32), raw-id maps, item features.

    Attributes:
      matrix: ``scipy.sparse.csr_matrix`` of shape (n_users, n_items), sorted indices, no
        duplicates, no explicit zeros.
      user_ids: raw user ids (numpy str array); ``user_ids[u]`` is the id of row ``u``.
      item_ids: raw item ids (numpy str array); ``item_ids[i]`` is the id of column ``i``.
      item_features: optional (n_items x n_features) CSR float32 matrix.
      feature_names: names of the feature columns (numpy str array), when features are given.
      name: a short label for printing.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_features: Optional[sp.csr_matrix] = None
    feature_names: Optional[np.ndarray] = None
    name: str = "interactions"

    def __post_init__(self):
        matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        matrix.sort_indices()
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "user_ids", _as_str_array(self.user_ids))
        object.__setattr__(self, "item_ids", _as_str_array(self.item_ids))
        if matrix.shape != (len(self.user_ids), len(self.item_ids)):
            raise DataError(
                f"matrix shape {matrix.shape} does not match {len(self.user_ids)} user ids and "
                f"{len(self.item_ids)} item ids")
        for kind, ids in (("user", self.user_ids), ("item", self.item_ids)):
            if _has_repeats(ids):
                raise DataError(f"{kind} ids are not unique")
        if self.item_features is not None:
            features = sp.csr_matrix(self.item_features, dtype=np.float32)
            features.sum_duplicates()
            features.sort_indices()
            if features.shape[0] != self.n_items:
                raise DataError(
                    f"item_features has {features.shape[0]} rows but there are {self.n_items} "
                    "items")
            if not np.all(np.isfinite(features.data)):
                raise DataError("item_features contain NaN or Inf")
            object.__setattr__(self, "item_features", features)
            names = self.feature_names
            if names is None:
                names = np.array([f"f{j}" for j in range(features.shape[1])])
            names = _as_str_array(names)
            if len(names) != features.shape[1]:
                raise DataError(
                    f"{len(names)} feature names for {features.shape[1]} feature columns")
            object.__setattr__(self, "feature_names", names)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_pairs(cls, users: Sequence, items: Sequence, weights: Optional[Sequence] = None, *,
                   user_ids: Optional[Sequence] = None, item_ids: Optional[Sequence] = None,
                   name: str = "interactions", **kwargs) -> "Interactions":
        """Builds from parallel arrays of raw user and item ids (duplicates are summed).

        When ``user_ids``/``item_ids`` are given they fix the index order (every raw id in the
        pairs must be among them); otherwise ids are indexed in order of first appearance.
        """
        users = _as_str_array(users)
        items = _as_str_array(items)
        if users.shape != items.shape or users.ndim != 1:
            raise DataError(f"users and items must be 1-D and equally long, got {users.shape} "
                            f"and {items.shape}")
        user_ids, rows = _index(users, user_ids, "user")
        item_ids, cols = _index(items, item_ids, "item")
        values = (np.ones(len(rows), np.float32) if weights is None
                  else np.asarray(weights, np.float32))
        matrix = sp.csr_matrix((values, (rows, cols)), shape=(len(user_ids), len(item_ids)))
        return cls(matrix, user_ids, item_ids, name=name, **kwargs)

    # ---- views --------------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def n_interactions(self) -> int:
        return int(self.matrix.nnz)

    @property
    def density(self) -> float:
        cells = self.n_users * self.n_items
        return self.n_interactions / cells if cells else 0.0

    @property
    def n_features(self) -> int:
        return 0 if self.item_features is None else self.item_features.shape[1]

    def user_index(self, raw_ids) -> np.ndarray:
        """Indices of raw user ids; -1 for ids that are not known."""
        return _lookup(self.user_ids, raw_ids)

    def item_index(self, raw_ids) -> np.ndarray:
        """Indices of raw item ids; -1 for ids that are not known."""
        return _lookup(self.item_ids, raw_ids)

    def pairs(self):
        """(user_index, item_index) int32 arrays of every interaction, in CSR order."""
        users = np.repeat(np.arange(self.n_users, dtype=np.int32), np.diff(self.matrix.indptr))
        return users, self.matrix.indices.astype(np.int32)

    def user_counts(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.matrix.indices, minlength=self.n_items)

    def with_matrix(self, matrix, name: Optional[str] = None) -> "Interactions":
        """The same ids and features with another matrix of the same shape."""
        return dataclasses.replace(self, matrix=matrix, name=name or self.name)

    def __repr__(self):
        text = (f"Interactions({self.name!r}: {self.n_users:,} users x {self.n_items:,} items, "
                f"{self.n_interactions:,} interactions, density {self.density:.4%}")
        if self.item_features is not None:
            text += f", {self.n_features:,} item features"
        return text + ")"


def _has_repeats(ids: np.ndarray) -> bool:
    """Whether a string array holds a value twice (a sort: numpy 2's hash-based ``np.unique``
    takes ten times as long on strings, 2 s for 767k user ids)."""
    ordered = np.sort(ids)
    return bool(np.any(ordered[1:] == ordered[:-1]))


def _index(raw: np.ndarray, vocabulary, kind: str):
    if vocabulary is None:
        vocabulary, first = np.unique(raw, return_index=True)
        vocabulary = vocabulary[np.argsort(first, kind="stable")]
        return vocabulary, _lookup(vocabulary, raw)
    vocabulary = _as_str_array(vocabulary)
    codes = _lookup(vocabulary, raw)
    if (codes < 0).any():
        missing = raw[codes < 0][:5]
        raise DataError(f"{(codes < 0).sum()} {kind} ids are not in the given {kind}_ids, "
                        f"e.g. {list(missing)}")
    return vocabulary, codes


def _lookup(vocabulary: np.ndarray, raw_ids) -> np.ndarray:
    raw = _as_str_array(np.atleast_1d(raw_ids))
    if len(vocabulary) == 0:
        return np.full(raw.shape, -1, np.int64)
    order = np.argsort(vocabulary, kind="stable")
    sorted_vocab = vocabulary[order]
    pos = np.searchsorted(sorted_vocab, raw)
    pos = np.minimum(pos, len(vocabulary) - 1)
    found = sorted_vocab[pos] == raw
    return np.where(found, order[pos], -1).astype(np.int64)
