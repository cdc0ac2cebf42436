"""What an export needs from a trained model: :class:`ExportSpec`, the small interface.

An export does not look inside a model class. It needs

* the raw ids of the users and items (strings, as a person sees them) and their vectors,
* the ``metric`` that compares them: ``"squared_l2"`` (CML: score ``-||u - v||^2``) or
  ``"dot_product"`` (matrix factorisation: score ``u . v``),
* per user, the items of the training input (train + validation) that recommendations exclude,
* the query for unknown ids (the centroid of the users, :meth:`ExportSpec.fallback_query`),
* optionally, a function from item features (a ``tf.SparseTensor`` [batch, n_features]) to item
  vectors, for cold-start items, with the names of the feature columns.

:func:`spec_from_model` builds it from any model that has ``user_vectors``, ``item_vectors`` and
``metric`` (and, for the feature signature, ``embed_items`` and ``n_features``), plus the
data :class:`~cml_tf.data.split.Split` it was trained on. A model that stores its vectors
differently builds an :class:`ExportSpec` directly.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

METRICS = ("squared_l2", "dot_product")
ITEM_QUERIES = ("vectors", "one_hot")


def _as_ids(ids, kind: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind == "S":
        ids = np.char.decode(ids, "utf-8")
    if ids.dtype.kind != "U":
        ids = ids.astype(str)
    if ids.ndim != 1:
        raise ValueError(f"{kind} ids must be a vector, got shape {ids.shape}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{kind} ids are not unique")
    bad = [i for i in ids if "\n" in i or "\r" in i]
    if bad:
        raise ValueError(f"{kind} ids must not contain line breaks (the export stores them as "
                         f"one id per line), e.g. {bad[0]!r}")
    return ids


@dataclasses.dataclass(eq=False)
class ExportSpec:
    """Everything an export takes from a model and its training data.

    Attributes:
      user_ids, item_ids: raw ids (str arrays), ``user_ids[u]`` is the id of row ``u`` of
        ``user_vectors``. Unique, without line breaks.
      user_vectors, item_vectors: float32 ``[n_users, dim]`` and ``[n_items, dim]``.
      metric: ``"squared_l2"`` (scores ``-||u - v||^2``; ``recommend_for_items`` queries with the
        censored mean ``y / max(||y||, 1)`` of the items' vectors) or ``"dot_product"``
        (scores ``u . v``; the plain mean).
      known: ``[n_users, n_items]`` sparse matrix, non-zero where the user interacted with the
        item in the training input: those items are never recommended to that user.
      item_embedder: optional ``f(tf.SparseTensor [batch, n_features] float32) -> [batch, dim]``
        (the ``embed_items`` signature). Its variables are found by tracing it.
      feature_names: names of the feature columns (str array of ``n_features``), required with
        ``item_embedder``.
      model_name: recorded in the export's report.
      item_queries: what an item-based query (``similar_items``, ``recommend_for_items``) starts
        from: ``"vectors"``, the item's vector (embedding models), or ``"one_hot"``, its unit
        vector e_i (item-item models such as EASE, whose user vectors are interaction rows over
        the items and whose item vectors are columns of an item-item matrix B, so e_i scores
        B's row i); ``"one_hot"`` needs ``dim == n_items``.
      new_items: how many of the items were added after training (:meth:`with_items`): the
        last ``new_items`` rows, which no user has seen.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    metric: str
    known: sp.spmatrix
    item_embedder: Optional[Callable[[tf.SparseTensor], tf.Tensor]] = None
    feature_names: Optional[np.ndarray] = None
    model_name: str = "model"
    item_queries: str = "vectors"
    new_items: int = 0

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.item_queries not in ITEM_QUERIES:
            raise ValueError(f"item_queries must be one of {ITEM_QUERIES}, got "
                             f"{self.item_queries!r}")
        self.user_ids = _as_ids(self.user_ids, "user")
        self.item_ids = _as_ids(self.item_ids, "item")
        self.user_vectors = np.ascontiguousarray(self.user_vectors, np.float32)
        self.item_vectors = np.ascontiguousarray(self.item_vectors, np.float32)
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        if n_items == 0 or n_users == 0:
            raise ValueError(f"nothing to export: {n_users} users, {n_items} items")
        for name, vectors, n in (("user_vectors", self.user_vectors, n_users),
                                 ("item_vectors", self.item_vectors, n_items)):
            if vectors.ndim != 2 or vectors.shape[0] != n:
                raise ValueError(f"{name} has shape {vectors.shape}; expected ({n}, dim)")
            if not np.all(np.isfinite(vectors)):
                raise ValueError(f"{name} contain NaN or Inf values")
        if self.user_vectors.shape[1] != self.item_vectors.shape[1]:
            raise ValueError(f"user and item vectors differ in dimension: "
                             f"{self.user_vectors.shape[1]} vs {self.item_vectors.shape[1]}")
        if self.item_queries == "one_hot" and self.item_vectors.shape[1] != n_items:
            raise ValueError(f"item_queries='one_hot' needs vectors of dimension n_items "
                             f"({n_items}), got {self.item_vectors.shape[1]}")
        known = sp.csr_matrix(self.known)
        if known.shape != (n_users, n_items):
            raise ValueError(f"known has shape {known.shape}; expected ({n_users}, {n_items})")
        known = sp.csr_matrix((np.ones(known.nnz, np.float32), known.indices, known.indptr),
                              shape=known.shape)
        known.sum_duplicates()
        known.sort_indices()
        self.known = known
        if self.item_embedder is not None:
            if self.feature_names is None:
                raise ValueError("item_embedder needs feature_names")
            self.feature_names = _as_ids(self.feature_names, "feature")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return self.item_vectors.shape[1]

    @property
    def n_features(self) -> int:
        return 0 if self.feature_names is None else len(self.feature_names)

    def item_index(self, ids) -> np.ndarray:
        """Row positions of item ids (all must exist)."""
        position = {item: j for j, item in enumerate(self.item_ids)}
        return np.array([position[i] for i in ids], np.int64)

    def item_query(self, position: int) -> np.ndarray:
        """The query vector an item-based signature starts from (``item_queries``)."""
        if self.item_queries == "one_hot":
            return np.eye(1, self.dim, position, dtype=np.float32)[0]
        return self.item_vectors[position]

    def with_items(self, item_ids, item_vectors) -> "ExportSpec":
        """This spec with more items appended to the catalogue (cold-start items: ids that are
        not in it yet, and their vectors, e.g. the feature prior's f(x)); no user has seen
        them, so no exclusion applies to them."""
        item_ids = _as_ids(item_ids, "new item")
        taken = np.intersect1d(item_ids, self.item_ids)
        if len(taken):
            raise ValueError(f"{len(taken)} new item ids are already in the catalogue, e.g. "
                             f"{str(taken[0])!r}: a trained item keeps its trained vector")
        known = sp.hstack([self.known, sp.csr_matrix((self.n_users, len(item_ids)))]).tocsr()
        return dataclasses.replace(
            self, item_ids=np.concatenate([self.item_ids, item_ids]),
            item_vectors=np.concatenate([self.item_vectors,
                                         np.asarray(item_vectors, np.float32)]),
            known=known, new_items=self.new_items + len(item_ids))

    def embed(self, features: sp.spmatrix, batch_size: int = 4096) -> np.ndarray:
        """``item_embedder`` on the rows of an items x ``n_features`` sparse matrix."""
        if self.item_embedder is None:
            raise ValueError("the model has no item features (it was trained without them), so "
                             "it cannot embed new items: train it with item features (CML+F)")
        features = sp.csr_matrix(features, dtype=np.float32)
        if features.shape[1] != self.n_features:
            raise ValueError(f"features have {features.shape[1]} columns; the model has "
                             f"{self.n_features} features")
        out = []
        for lo in range(0, features.shape[0], batch_size):
            rows = features[lo:lo + batch_size].tocoo()
            sparse = tf.sparse.reorder(tf.SparseTensor(
                np.stack([rows.row, rows.col], 1).astype(np.int64), rows.data, rows.shape))
            out.append(np.asarray(self.item_embedder(sparse), np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def fallback_query(self) -> np.ndarray:
        """The query for an unknown id: the centroid of all user vectors (censored into the unit
        ball, ``y / max(||y||, 1)``, for squared_l2), so a stranger gets the items nearest to
        the average user, scored like everyone else's."""
        centroid = self.user_vectors.astype(np.float64).mean(axis=0)
        if self.metric == "squared_l2":
            centroid = centroid / max(np.linalg.norm(centroid), 1.0)
        return centroid.astype(np.float32)


def spec_from_model(model, split, model_name: Optional[str] = None) -> ExportSpec:
    """The :class:`ExportSpec` of a trained model and the Split (or Interactions) it was
    trained on.

    Uses only ``model.user_vectors``, ``model.item_vectors``, ``model.metric``,
    ``model.item_queries`` (default "vectors") and, when the model has item features
    (``model.n_features > 0``), ``model.embed_items``. The excluded
    items are ``split.known_matrix()`` (train + validation: what a deployed model has seen).
    """
    train = getattr(split, "train", split)
    known = split.known_matrix() if hasattr(split, "known_matrix") else train.matrix
    embedder, feature_names = None, None
    if getattr(model, "n_features", 0) and callable(getattr(model, "embed_items", None)):
        embedder = model.embed_items
        feature_names = train.feature_names
        if feature_names is None or len(feature_names) != model.n_features:
            feature_names = np.array([f"f{j}" for j in range(model.n_features)])
    return ExportSpec(user_ids=train.user_ids, item_ids=train.item_ids,
                      user_vectors=model.user_vectors, item_vectors=model.item_vectors,
                      metric=getattr(model, "metric", "squared_l2"), known=known,
                      item_embedder=embedder, feature_names=feature_names,
                      model_name=model_name or type(model).__name__,
                      item_queries=getattr(model, "item_queries", "vectors"))
