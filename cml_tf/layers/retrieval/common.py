"""What every retrieval layer shares: scores under a metric, exclusions, padding, and the mixin
that maps a layer's ``_search`` onto the TFRS ``TopK`` interface (package docstring: the
conventions and what is fixed relative to stock TFRS)."""

import math

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

_tfrs_top_k = tfrs.layers.factorized_top_k

METRICS = ("squared_l2", "dot_product")


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


# ---- scores and exclusions (pure TensorFlow) ----------------------------------------------


def score_matrix(queries: tf.Tensor, candidates: tf.Tensor, metric: str = "squared_l2",
                 candidate_sq_norms: tf.Tensor | None = None) -> tf.Tensor:
    """All-pairs scores ``[num_queries, num_candidates]``, higher is better.

    ``squared_l2``: ``-max(||q||^2 - 2 q.v + ||v||^2, 0)`` (one matmul; ``candidate_sq_norms`` may
    be passed precomputed). ``dot_product``: ``q.v``.
    """
    dots = tf.matmul(queries, candidates, transpose_b=True)
    if metric == "dot_product":
        return dots
    if candidate_sq_norms is None:
        candidate_sq_norms = tf.reduce_sum(tf.square(candidates), axis=-1)
    query_sq_norms = tf.reduce_sum(tf.square(queries), axis=-1, keepdims=True)
    sq_dist = query_sq_norms - 2.0 * dots + candidate_sq_norms[tf.newaxis, :]
    return -tf.maximum(sq_dist, 0.0)


def rows_variable(values, name: str, block_cells: int = 1 << 24) -> tf.Variable:
    """A float32 ``tf.Variable`` holding ``values`` ``[n, d]`` (numpy or a tensor), written a
    block of about ``block_cells`` values at a time: the variable is the only full copy
    (``tf.Variable(values)`` holds a converted tensor and the variable at once, which matters
    for EASE's n_items x n_items vectors)."""
    n, dim = values.shape
    variable = tf.Variable(tf.zeros([n, dim], tf.float32), trainable=False, name=name)
    step = max(1, block_cells // max(int(dim), 1))
    for start in range(0, int(n), step):
        stop = min(start + step, int(n))
        variable.scatter_update(tf.IndexedSlices(
            tf.convert_to_tensor(values[start:stop], tf.float32), tf.range(start, stop)))
    return variable


def row_sq_norms(rows: tf.Variable, block_cells: int = 1 << 24) -> tf.Tensor:
    """``||v||^2`` of every row of ``rows`` ``[n, d]``, a block of rows at a time (no
    full-size temporary)."""
    n, dim = rows.shape
    step = max(1, block_cells // max(int(dim), 1))
    return tf.concat([tf.reduce_sum(tf.square(tf.gather(rows, tf.range(start, min(
        start + step, int(n))))), axis=1) for start in range(0, max(int(n), 1), step)], 0)


def score_pairs(queries: tf.Tensor, candidates: tf.Tensor,
                metric: str = "squared_l2") -> tf.Tensor:
    """Row-wise scores ``[batch]`` of ``queries[i]`` against ``candidates[i]``."""
    if metric == "dot_product":
        return tf.reduce_sum(queries * candidates, axis=-1)
    return -tf.reduce_sum(tf.square(queries - candidates), axis=-1)


def padding_identifier(dtype: tf.DType):
    """The identifier of an empty result slot: ``b""`` for strings, ``-1`` for numbers."""
    return b"" if dtype == tf.string else -1


def _fill_invalid(scores, identifiers, invalid):
    """Scores of invalid slots -> NaN, their identifiers -> the padding identifier."""
    scores = tf.where(invalid, tf.constant(float("nan"), scores.dtype), scores)
    pad = tf.constant(padding_identifier(identifiers.dtype), identifiers.dtype)
    return scores, tf.where(invalid, pad, identifiers)


def exclude(scores: tf.Tensor, identifiers: tf.Tensor, exclusions: tf.Tensor,
            k: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Drops excluded identifiers from descending top-K lists and keeps the best ``k``.

    Args:
      scores: ``[batch, width]`` scores sorted descending, ``NaN`` for empty slots.
      identifiers: ``[batch, width]`` identifiers of those scores.
      exclusions: ``[batch, num_excluded]`` identifiers to drop (pad rows with the padding
        identifier, e.g. ``b""``, or any id that is not in the index).
      k: number of results to keep; at most ``width``.

    Returns:
      ``(scores, identifiers)`` of shape ``[batch, k]``, still descending; excluded identifiers
      never appear (slots that cannot be filled get ``NaN`` / the padding identifier). Unlike
      TFRS's ``_exclude`` it masks with ``-inf`` instead of subtracting ``1e5`` and it never sorts
      by anything but "higher is better".
    """
    exclusions = tf.convert_to_tensor(exclusions)
    if exclusions.dtype != identifiers.dtype:
        if identifiers.dtype == tf.string or exclusions.dtype == tf.string:
            raise TypeError(f"exclusions have dtype {exclusions.dtype.name} but the index "
                            f"identifiers have dtype {identifiers.dtype.name}")
        exclusions = tf.cast(exclusions, identifiers.dtype)
    excluded = tf.reduce_any(
        tf.equal(identifiers[:, :, tf.newaxis], exclusions[:, tf.newaxis, :]), axis=-1)
    invalid = tf.logical_or(excluded, tf.math.is_nan(scores))
    masked = tf.where(invalid, tf.constant(-np.inf, scores.dtype), scores)
    # tf.math.top_k is stable: equal scores keep their (already sorted) order.
    _, order = tf.math.top_k(masked, k=k)
    return _fill_invalid(tf.gather(scores, order, batch_dims=1),
                         tf.gather(identifiers, order, batch_dims=1),
                         tf.gather(invalid, order, batch_dims=1))


def _pad_to(scores, positions, width, fill):
    """Pads ``[batch, w]`` results to ``width`` columns (``fill`` scores, position 0); no-op
    when ``w >= width``."""
    missing = tf.maximum(width - tf.shape(scores)[1], 0)
    paddings = [[0, 0], [0, missing]]
    return (tf.pad(scores, paddings, constant_values=fill),
            tf.pad(positions, paddings, constant_values=0))


def _num_to_search(num_partitions: int, num_items: int, k: int) -> int:
    """How many of ``num_partitions`` partitions (or ScaNN leaves) a query scans by default.

    ``max(ceil(2 sqrt(P)), min(P, 8), ceil(4 k / mean partition size))``, at most ``P``: about
    ``2 / sqrt(P)`` of the catalogue (11% at 316 partitions, 6% at 1000), and at least enough
    partitions to hold ``4 k`` items on average. On clustered unit-ball data
    (``benchmarks/retrieval_layers.py``) exact re-ranking of those partitions gives recall@k
    >= 0.98 against brute force for k in 10..100.
    """
    to_search = max(math.ceil(2.0 * math.sqrt(num_partitions)), min(num_partitions, 8),
                    math.ceil(4.0 * k * num_partitions / num_items))
    return int(min(to_search, num_partitions))



# ---- common behaviour of the layers -------------------------------------------------------


class _RetrievalMixin:
    """Metric, query plumbing and the order-correct ``query_with_exclusions``.

    Subclasses implement ``_search(queries, k) -> (scores, positions, invalid)`` where positions
    index the stored identifiers, for a python-int or tensor ``k`` already clamped to the
    catalogue size; the mixin maps positions to identifiers and fills invalid slots.
    """

    metric: str

    def _init_retrieval(self, metric: str) -> None:
        self.metric = _check_metric(metric)
        self._num_items = None

    @property
    def num_items(self) -> int | None:
        """Catalogue size of the current index (``None`` before :meth:`index`)."""
        return self._num_items

    def _store_identifiers(self, identifiers, num_items):
        self._row_identifiers = identifiers is None   # identifier == position
        if identifiers is None:
            identifiers = tf.range(num_items, dtype=tf.int32)
        identifiers = tf.convert_to_tensor(identifiers)
        if identifiers.shape.rank != 1 or identifiers.shape[0] != num_items:
            raise ValueError(f"identifiers must be a vector of {num_items} entries (one per "
                             f"candidate row), got shape {identifiers.shape}")
        self._identifiers = tf.Variable(identifiers, trainable=False, name="identifiers")
        self._num_items = int(num_items)

    def _check_indexed(self):
        if self._num_items is None:
            raise ValueError("The `index` method must be called first to create the retrieval "
                             "index.")

    def _prepare_queries(self, queries):
        if getattr(self, "query_model", None) is not None:
            queries = self.query_model(queries)
        if not isinstance(queries, (tf.Tensor, tf.Variable, np.ndarray)):
            raise TypeError(f"Queries must be a tensor, got {type(queries)}.")
        queries = tf.convert_to_tensor(queries, tf.float32)
        if queries.shape.rank not in (1, 2):
            raise ValueError(f"Queries must be of rank 2 or 1, got {queries.shape.rank}.")
        return queries

    def _clamp_k(self, k):
        k = self._k if k is None else k
        if isinstance(k, (int, np.integer)):
            return max(min(int(k), self._num_items), 0)
        return tf.minimum(tf.cast(k, tf.int32), self._num_items)

    def _retrieve(self, queries, k=None, **search_kwargs):
        self._check_indexed()
        queries = self._prepare_queries(queries)
        single = queries.shape.rank == 1
        if single:
            queries = queries[tf.newaxis, :]
        scores, positions, invalid = self._search(queries, self._clamp_k(k), **search_kwargs)
        identifiers = tf.gather(self._identifiers, tf.where(invalid, 0, positions))
        scores, identifiers = _fill_invalid(scores, identifiers, invalid)
        if single:
            return scores[0], identifiers[0]
        return scores, identifiers

    def search_unsorted(self, queries: tf.Tensor, k: int | tf.Tensor):
        """The lean search of a serving graph: ``(scores, identifiers, invalid)`` of shape
        ``[batch, <= k]`` for a ``[batch, dim]`` float32 query batch. Unlike :meth:`call` the
        columns need not be sorted (ScaNN's come as ScaNN gives them), there is no padding to
        ``k`` columns, and an invalid slot's score and identifier are undefined: the caller
        masks and sorts. Default identifiers (row positions) are not looked up at all."""
        self._check_indexed()
        scores, positions, invalid = self._search_unsorted(queries, self._clamp_k(k))
        if not self._row_identifiers:
            positions = tf.gather(self._identifiers, positions)
        return scores, positions, invalid

    def _search_unsorted(self, queries, k):
        return self._search(queries, k)

    def score(self, queries: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """Row-wise score of ``queries[i]`` against ``candidates[i]`` under this layer's metric
        (what :class:`EuclideanFactorizedTopK` uses for the true candidate)."""
        return score_pairs(queries, candidates, self.metric)

    def score_tolerance(self, queries: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
        """Row-wise float32 rounding bound of :meth:`score` (``16 eps`` times the magnitude of
        the terms summed): two scores closer than this are a tie."""
        eps = 16.0 * np.finfo(np.float32).eps
        q_sq = tf.reduce_sum(tf.square(queries), axis=-1)
        v_sq = tf.reduce_sum(tf.square(candidates), axis=-1)
        if self.metric == "dot_product":
            return eps * tf.sqrt(q_sq * v_sq)
        return eps * (q_sq + v_sq)

    @tf.function
    def query_with_exclusions(self, queries, exclusions, k=None):
        """Top-``k`` results that are not in ``exclusions`` (``[batch, num_excluded]`` ids).

        Overrides ``TopK.query_with_exclusions`` (TFRS layers l.242-288): retrieves
        ``k + num_excluded`` results (read dynamically, so ``[None, None]`` exclusion signatures
        work), then :func:`exclude` keeps the best ``k`` non-excluded ones in descending order.
        """
        self._check_indexed()
        k = self._clamp_k(k)
        exclusions = tf.convert_to_tensor(exclusions)
        if exclusions.shape.rank == 1:
            exclusions = exclusions[:, tf.newaxis]
        wider_k = tf.minimum(k + tf.shape(exclusions)[1], self._num_items)
        scores, identifiers = self(queries, k=wider_k)
        return exclude(scores, identifiers, exclusions, k=k)

    def _base_config(self):
        return {"k": self._k, "metric": self.metric, "name": self.name}
