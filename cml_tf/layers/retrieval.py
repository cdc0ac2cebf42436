"""Euclidean (and dot-product) top-K retrieval layers on top of TensorFlow Recommenders.

CML ranks items by squared Euclidean distance ``d(q, v) = ||q - v||^2``: the best items are the
closest. Every layer here returns ``(scores, identifiers)`` of shape ``[batch, k]`` with

    scores = -||q - v||^2          (metric="squared_l2", the default)
    scores = q . v                 (metric="dot_product", for matrix-factorisation baselines)

sorted DESCENDING (best first), so that they compose with ``tfrs.metrics.FactorizedTopK``, with
``TopK.query_with_exclusions`` and with each other. ``k`` is clamped to the catalogue size.

Layers (all ``tfrs.layers.factorized_top_k.TopK`` subclasses):

* :class:`BruteForce` -- exact. ``||q - v||^2 = ||q||^2 - 2 q.v + ||v||^2`` with ``||v||^2``
  precomputed at index time: one matmul per batch, standard TensorFlow ops only.
* :class:`Partitioned` -- approximate, standard TensorFlow ops only (loads in a stock TF Serving
  without ScaNN's custom ops). k-means partitions of the items (an inverted file, "IVF"); a query
  scans the ``num_partitions_to_search`` partitions with the nearest centroids and re-ranks their
  items exactly. Searching every partition returns the brute-force result.
* :class:`ScaNN` -- approximate, ScaNN's tree + asymmetric hashing + exact re-ordering
  (``distance_measure="squared_l2"``). A SavedModel that uses it needs ``import scann`` to load.

Slots that cannot be filled (fewer than ``k`` items left after exclusions, or a ScaNN search that
found fewer than ``k`` neighbours) hold score ``NaN`` and identifier ``-1`` (integer identifiers)
or ``b""`` (string identifiers), the padding convention ``tfrs.metrics.FactorizedTopK`` already
understands for ScaNN. Excluded identifiers are never returned.

What is wrong with the stock TFRS layers for CML, and what we do about it (line numbers refer to
``tensorflow_recommenders/layers/factorized_top_k.py`` and ``metrics/factorized_top_k.py`` in
TFRS 0.7.7):

1. ``tfrs.layers.factorized_top_k.ScaNN.call`` (layers l.764-793) returns ScaNN's raw
   ``distances``; with ``distance_measure="squared_l2"`` these are squared distances sorted
   ascending (smallest = best), i.e. "lower is better", the opposite of every other TFRS layer.
2. ``TopK.query_with_exclusions`` (layers l.242-288) asks for ``k + exclusions.shape[1]``
   results and re-ranks them in ``_exclude`` (l.83-115) with ``tf.math.top_k`` of
   ``scores - 1e5 * excluded`` (l.107-111): it assumes higher is better, so on squared distances
   it keeps the k FARTHEST of the retrieved items, farthest first (when an excluded id was not
   among the retrieved, the nearest non-excluded items are dropped). It also reads the static
   ``exclusions.shape[1]`` (a ``[None, None]`` serving signature fails), and when fewer than
   ``k`` items remain it returns excluded items with their original scores.
3. ``tfrs.metrics.FactorizedTopK.update_state`` (metrics l.155-161) asserts that the scores are
   sorted descending (ascending distances fail that assertion), and its score-based path
   (l.133-134, l.183-192) scores the true candidate by a dot product, which is not comparable with
   ``-||q - v||^2``.

Fixes: :class:`ScaNN` subclasses the TFRS layer and overrides ``call`` to return
``-distance`` best first (ScaNN's NaN-padded slots keep their NaN score; their dummy index 0 is
replaced by the padding identifier); every layer here overrides ``query_with_exclusions`` with
an order-correct, NaN-aware exclusion (:func:`exclude`, masking with ``-inf``) that reads the
number of exclusions dynamically; and :class:`EuclideanFactorizedTopK` is a drop-in subclass of
``tfrs.metrics.FactorizedTopK`` whose score-based path scores the true candidate with the layer's
own metric (the stock metric works unchanged with our layers in its id-based mode).
"""

import math
import uuid

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

_tfrs_top_k = tfrs.layers.factorized_top_k

METRICS = ("squared_l2", "dot_product")


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


# ----------------------------------------------------------------------------------------------
# Scores and exclusions (pure TensorFlow, shared by every layer).
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Common behaviour of the layers.
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Exact brute force.
# ----------------------------------------------------------------------------------------------


class BruteForce(_RetrievalMixin, _tfrs_top_k.TopK):
    """Exact top-K by squared Euclidean distance (or dot product).

    ``score(q, v) = -(||q||^2 - 2 q.v + ||v||^2)`` with ``||v||^2`` precomputed by :meth:`index`
    (clamped at 0, so it never exceeds 0 through rounding); one ``[batch, num_items]`` matmul and
    ``tf.math.top_k`` per call. Memory is ``O(batch * num_items)``: batch large evaluations.

    TFRS's own ``BruteForce`` is dot-product only; this is a sibling ``TopK`` with the same API
    (``index(candidates, identifiers=None)``, ``index_from_dataset``, ``call(queries, k=None)``,
    ``query_with_exclusions``) and standard TensorFlow ops only.
    """

    def __init__(self, query_model: tf.keras.Model | None = None, k: int = 10,
                 metric: str = "squared_l2", name: str | None = None):
        """Args:
          query_model: optional Keras model mapping raw query features to query embeddings.
          k: default number of results.
          metric: ``"squared_l2"`` (scores ``-||q - v||^2``) or ``"dot_product"``.
          name: layer name.
        """
        super().__init__(k=k, name=name)
        self._init_retrieval(metric)
        self.query_model = query_model

    def index(self, candidates: tf.Tensor,
              identifiers: tf.Tensor | None = None) -> "BruteForce":
        candidates = tf.convert_to_tensor(candidates, tf.float32)
        if candidates.shape.rank != 2:
            raise ValueError(f"The candidates tensor must be 2D (got {candidates.shape}).")
        self._candidates = tf.Variable(candidates, trainable=False, name="candidates")
        self._candidate_sq_norms = tf.Variable(tf.reduce_sum(tf.square(candidates), axis=1),
                                               trainable=False, name="candidate_sq_norms")
        self._store_identifiers(identifiers, candidates.shape[0])
        self._reset_tf_function_cache()
        return self

    def call(self, queries: tf.Tensor | dict[str, tf.Tensor],
             k: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        return self._retrieve(queries, k)

    def _search(self, queries, k):
        scores = score_matrix(queries, self._candidates, self.metric, self._candidate_sq_norms)
        scores, positions = tf.math.top_k(scores, k=k)
        return scores, positions, tf.zeros_like(positions, tf.bool)

    def is_exact(self) -> bool:
        return True

    def get_config(self):
        return self._base_config()


# ----------------------------------------------------------------------------------------------
# Partitioned (k-means / IVF) approximate search from standard TensorFlow ops.
# ----------------------------------------------------------------------------------------------


def _nearest_centroids(points, centroids, chunk=16384):
    """(index, squared distance) of the nearest centroid of every row, in row chunks."""
    c_sq = np.einsum("ij,ij->i", centroids, centroids)
    nearest = np.empty(points.shape[0], np.int64)
    dist = np.empty(points.shape[0], np.float32)
    for lo in range(0, points.shape[0], chunk):
        x = points[lo:lo + chunk]
        d = (np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * (x @ centroids.T)) + c_sq
        nearest[lo:lo + chunk] = np.argmin(d, axis=1)
        dist[lo:lo + chunk] = d[np.arange(x.shape[0]), nearest[lo:lo + chunk]]
    return nearest, np.maximum(dist, 0.0)


def kmeans(points: np.ndarray, num_clusters: int, iterations: int = 10, seed: int = 0,
           max_points_per_cluster: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """k-means (squared L2) in numpy, deterministic for a given ``seed``.

    Trains on at most ``max_points_per_cluster * num_clusters`` rows sampled without replacement
    (all rows when fewer): k-means++ initialisation on at most ``32 * num_clusters`` of them, then
    ``iterations`` Lloyd steps; a cluster that empties is re-seeded with the training row farthest
    from its centroid. k-means++ matters here: it gives much more even partitions than a random
    initialisation, and the cost of a partitioned query grows with the size of the partitions
    it scans.

    Returns ``(centroids [num_clusters, dim] float32, assignment [num_points] int64)``: every row
    of ``points`` is assigned to its nearest centroid. Clusters may be empty in the final
    assignment; callers drop them.
    """
    points = np.asarray(points, np.float32)
    n = points.shape[0]
    num_clusters = int(min(max(num_clusters, 1), n))
    rng = np.random.default_rng(seed)
    sample_size = min(n, max_points_per_cluster * num_clusters)
    train = points[np.sort(rng.choice(n, sample_size, replace=False))] if sample_size < n \
        else points

    # k-means++ seeding.
    seeding = train[:min(train.shape[0], 32 * num_clusters)]
    chosen = [int(rng.integers(seeding.shape[0]))]
    closest = np.sum(np.square(seeding - seeding[chosen[0]]), axis=1)
    for _ in range(num_clusters - 1):
        total = float(closest.sum())
        if total <= 0.0:    # fewer distinct points than clusters
            candidates = np.setdiff1d(np.arange(seeding.shape[0]), chosen)
            chosen.extend(candidates[:num_clusters - len(chosen)].tolist())
            break
        nxt = int(rng.choice(seeding.shape[0], p=closest / total))
        chosen.append(nxt)
        closest = np.minimum(closest, np.sum(np.square(seeding - seeding[nxt]), axis=1))
    centroids = seeding[np.asarray(chosen)].copy()

    for _ in range(iterations):
        nearest, dist = _nearest_centroids(train, centroids)
        counts = np.bincount(nearest, minlength=num_clusters)
        filled = np.flatnonzero(counts)
        order = np.argsort(nearest, kind="stable")
        starts = (np.cumsum(counts) - counts)[filled]
        sums = np.add.reduceat(train[order].astype(np.float64), starts, axis=0)
        new = centroids.copy()
        new[filled] = (sums / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            new[empty] = train[np.argsort(-dist, kind="stable")[:empty.size]]
        converged = np.array_equal(new, centroids)
        centroids = new
        if converged:
            break
    return centroids, _nearest_centroids(points, centroids)[0]


def split_large_partitions(points: np.ndarray, centroids: np.ndarray, assignment: np.ndarray,
                           max_size: int, iterations: int = 10,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Splits every partition larger than ``max_size`` by k-means inside it.

    k-means on real embeddings gives uneven partitions, and the items near a query tend to sit
    in the large ones, so a probe scans far more than ``n / num_partitions`` items per partition
    (on the benchmark data the size-weighted mean partition is ~2x the mean). A partition of
    ``m > max_size`` items is re-clustered into ``ceil(m / (max_size / 2))`` parts, up to three
    rounds. Returns new ``(centroids, assignment)`` (no empty partitions).
    """
    for round_ in range(3):
        counts = np.bincount(assignment, minlength=centroids.shape[0])
        large = np.flatnonzero(counts > max_size)
        if large.size == 0:
            break
        order = np.argsort(assignment, kind="stable")
        starts = np.cumsum(counts) - counts
        new_centroids = [centroids[counts > 0]]
        remap = np.full(centroids.shape[0], -1, np.int64)
        remap[counts > 0] = np.arange(int((counts > 0).sum()))
        assignment = remap[assignment]
        next_id = new_centroids[0].shape[0]
        for c in large:
            members = order[starts[c]:starts[c] + counts[c]]
            parts = math.ceil(counts[c] / max(max_size // 2, 1))
            sub_centroids, sub_assignment = kmeans(points[members], parts, iterations,
                                                   seed=seed + 7919 * round_ + int(c))
            used = np.unique(sub_assignment)
            # The first used sub-partition keeps id remap[c]; the others get new ids.
            ids = np.concatenate([[remap[c]], next_id + np.arange(used.size - 1)])
            lookup = np.zeros(sub_centroids.shape[0], np.int64)
            lookup[used] = ids
            assignment[members] = lookup[sub_assignment]
            new_centroids[0][remap[c]] = sub_centroids[used[0]]
            new_centroids.append(sub_centroids[used[1:]])
            next_id += used.size - 1
        centroids = np.concatenate(new_centroids).astype(np.float32)
    return centroids, assignment


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


def partitioned_defaults(num_items: int, k: int = 10,
                         num_partitions: int | None = None) -> dict[str, int]:
    """Default ``num_partitions`` and ``num_partitions_to_search`` for :class:`Partitioned`.

    ``num_partitions = round(sqrt(num_items))``, within ``[1, 4096]`` and at most
    ``num_items // 16`` (partitions of >= 16 items on average; under 32 items that is a single
    partition, i.e. brute force), unless given. ``num_partitions_to_search`` from
    :func:`_num_to_search` (about ``2 sqrt(num_partitions)``).
    """
    n, k = int(num_items), int(k)
    if n <= 0 or k <= 0:
        raise ValueError(f"num_items and k must be positive, got {num_items} and {k}")
    if num_partitions is None:
        num_partitions = min(max(round(math.sqrt(n)), 1), 4096, max(n // 16, 1))
    num_partitions = int(min(max(num_partitions, 1), n))
    return {"num_partitions": num_partitions,
            "num_partitions_to_search": _num_to_search(num_partitions, n, k)}


class Partitioned(_RetrievalMixin, _tfrs_top_k.TopK):
    """Approximate top-K from k-means partitions, in standard TensorFlow ops (an IVF index).

    Index time (numpy, deterministic by ``seed``): :func:`kmeans` splits the items into
    ``num_partitions`` partitions, partitions over ``max_partition_size_factor`` times the mean
    size are split further (:func:`split_large_partitions`; ``num_partitions`` then ends up a
    little larger) and empty ones dropped; the default ``num_partitions_to_search`` is computed
    from the final count (:func:`partitioned_defaults`). Items are stored sorted by partition in
    a CSR layout -- ``items[offsets[p]:offsets[p + 1]]`` is partition ``p`` -- with their
    ``||v||^2``, so a partition is one contiguous block and there is no padding to scan.

    Query time, vectorised over the batch: score the centroids with the layer's metric and take
    the ``num_partitions_to_search`` best per query; expand the union of the partitions probed by
    the batch into item positions (``tf.ragged.range`` over the CSR offsets), gather those items
    once, score them against every query with one matmul (``-||q - v||^2`` or ``q.v``), mask
    the items of partitions a query did not probe with ``-inf``, and keep the top ``k``. One
    query scans ~``num_partitions_to_search / num_partitions`` of the catalogue; a large batch
    probes most partitions and costs about as much as :class:`BruteForce` (use that one for
    offline evaluation). Memory is ``O(batch * scanned items)``. Searching every partition returns
    the exact (brute-force) result. Every op is a stock TensorFlow kernel, so a SavedModel
    using this layer loads in TF Serving without ScaNN; all state is in ``tf.Variable``s.
    """

    def __init__(self, query_model: tf.keras.Model | None = None, k: int = 10,
                 metric: str = "squared_l2", num_partitions: int | None = None,
                 num_partitions_to_search: int | None = None, kmeans_iterations: int = 10,
                 max_partition_size_factor: float | None = 1.5, seed: int = 0,
                 name: str | None = None):
        """Args:
          query_model: optional Keras model mapping raw query features to query embeddings.
          k: default number of results.
          metric: ``"squared_l2"`` or ``"dot_product"`` (centroid routing and re-ranking use it;
            the partitions are k-means in squared L2 either way).
          num_partitions, num_partitions_to_search: defaults from :func:`partitioned_defaults`
            at index time. ``num_partitions_to_search`` can also be passed to ``call``.
          kmeans_iterations: Lloyd iterations at index time.
          max_partition_size_factor: partitions larger than this times the mean partition size
            are split (:func:`split_large_partitions`), which adds partitions; ``None`` keeps the
            k-means partitions as they are.
          seed: k-means seed.
          name: layer name.
        """
        super().__init__(k=k, name=name)
        self._init_retrieval(metric)
        self.query_model = query_model
        self._requested_num_partitions = num_partitions
        self._requested_num_partitions_to_search = num_partitions_to_search
        self._kmeans_iterations = int(kmeans_iterations)
        self._max_partition_size_factor = max_partition_size_factor
        self._seed = int(seed)
        self.num_partitions = None
        self.num_partitions_to_search = None

    def index(self, candidates: tf.Tensor,
              identifiers: tf.Tensor | None = None) -> "Partitioned":
        vectors = np.asarray(candidates, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"The candidates tensor must be 2D (got {vectors.shape}).")
        n = vectors.shape[0]
        requested = partitioned_defaults(n, self._k, self._requested_num_partitions)
        centroids, assignment = kmeans(vectors, requested["num_partitions"],
                                       self._kmeans_iterations, self._seed)
        if self._max_partition_size_factor:
            max_size = math.ceil(self._max_partition_size_factor * n / centroids.shape[0])
            centroids, assignment = split_large_partitions(
                vectors, centroids, assignment, max_size, self._kmeans_iterations, self._seed)
        # Drop empty partitions; store the items sorted by partition (CSR layout).
        counts = np.bincount(assignment, minlength=centroids.shape[0])
        kept = np.flatnonzero(counts)
        remap = np.zeros(centroids.shape[0], np.int64)
        remap[kept] = np.arange(kept.size)
        order = np.argsort(remap[assignment], kind="stable")
        centroids = centroids[kept]
        offsets = np.concatenate([[0], np.cumsum(counts[kept])]).astype(np.int32)

        self.num_partitions = int(kept.size)
        to_search = (self._requested_num_partitions_to_search
                     or partitioned_defaults(n, self._k, self.num_partitions)
                     ["num_partitions_to_search"])
        self.num_partitions_to_search = int(min(max(to_search, 1), self.num_partitions))

        sorted_vectors = vectors[order]
        self._centroids = tf.Variable(centroids, trainable=False, name="centroids")
        self._centroid_sq_norms = tf.Variable(np.einsum("ij,ij->i", centroids, centroids),
                                              trainable=False, name="centroid_sq_norms")
        self._items = tf.Variable(sorted_vectors, trainable=False, name="items")
        self._item_sq_norms = tf.Variable(np.einsum("ij,ij->i", sorted_vectors, sorted_vectors),
                                          trainable=False, name="item_sq_norms")
        self._partition_offsets = tf.Variable(offsets, trainable=False, name="partition_offsets")
        if identifiers is None:
            identifiers = order.astype(np.int32)
        else:
            identifiers = tf.gather(tf.convert_to_tensor(identifiers), order)
        self._store_identifiers(identifiers, n)
        self._reset_tf_function_cache()
        return self

    @property
    def partition_sizes(self) -> np.ndarray:
        offsets = self._partition_offsets.numpy()
        return offsets[1:] - offsets[:-1]

    def call(self, queries: tf.Tensor | dict[str, tf.Tensor], k: int | None = None,
             num_partitions_to_search: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        return self._retrieve(queries, k, num_partitions_to_search=num_partitions_to_search)

    def _search(self, queries, k, num_partitions_to_search=None):
        probe = num_partitions_to_search or self.num_partitions_to_search
        probe = min(int(probe), self.num_partitions)
        centroid_scores = score_matrix(queries, self._centroids, self.metric,
                                       self._centroid_sq_norms)
        _, probed = tf.math.top_k(centroid_scores, k=probe)                    # [B, probe]
        # probed_mask[b, p]: query b searches partition p.
        batch = tf.shape(queries)[0]
        rows = tf.repeat(tf.range(batch), probe)
        probed_mask = tf.scatter_nd(
            tf.stack([rows, tf.reshape(probed, [-1])], axis=1),
            tf.ones_like(rows), [batch, self.num_partitions]) > 0              # [B, P]
        # Items of every partition probed by some query of the batch, as one matmul.
        union = tf.sort(tf.unique(tf.reshape(probed, [-1])).y)                 # [U]
        starts = tf.gather(self._partition_offsets[:-1], union)
        sizes = tf.gather(self._partition_offsets[1:], union) - starts
        positions = tf.ragged.range(starts, starts + sizes).flat_values        # [T]
        partition_of = tf.repeat(union, sizes)                                 # [T]
        scores = score_matrix(queries, tf.gather(self._items, positions), self.metric,
                              tf.gather(self._item_sq_norms, positions))       # [B, T]
        neg_inf = tf.constant(-np.inf, tf.float32)
        scores = tf.where(tf.gather(probed_mask, partition_of, axis=1), scores, neg_inf)
        # Fewer candidates than k: pad with empty slots.
        missing = tf.maximum(k - tf.shape(positions)[0], 0)
        scores = tf.pad(scores, [[0, 0], [0, missing]], constant_values=neg_inf)
        positions = tf.pad(positions, [[0, missing]])
        top_scores, order = tf.math.top_k(scores, k=k)
        return top_scores, tf.gather(positions, order), tf.math.is_inf(top_scores)

    def is_exact(self) -> bool:
        return self.num_partitions is not None and \
            self.num_partitions_to_search >= self.num_partitions

    def get_config(self):
        return {**self._base_config(), "num_partitions": self._requested_num_partitions,
                "num_partitions_to_search": self._requested_num_partitions_to_search,
                "kmeans_iterations": self._kmeans_iterations,
                "max_partition_size_factor": self._max_partition_size_factor, "seed": self._seed}


# ----------------------------------------------------------------------------------------------
# ScaNN.
# ----------------------------------------------------------------------------------------------


SCANN_BRUTE_FORCE_BELOW = 2048
SCANN_TREE_FROM = 50_000
REORDER_MULTIPLE = 30


def scann_defaults(num_items: int, k: int = 10, num_leaves: int | None = None,
                   tree: bool | None = None) -> dict[str, bool | int | None]:
    """Default ScaNN parameters for a catalogue of ``num_items`` items and top-``k`` queries.

    Three modes, by catalogue size unless ``tree`` (or ``num_leaves``, which implies a tree)
    says otherwise:

    * ``num_items < SCANN_BRUTE_FORCE_BELOW`` (2048): exact float32 brute force inside ScaNN
      (``brute_force=True``, every other value ``None``);
    * up to ``SCANN_TREE_FROM`` (50,000) items: no tree -- asymmetric hashing (AH) over every
      item, then exact re-ordering of the best ``num_reordering_candidates``. On trained CML
      vectors (r=100, most of them on the unit sphere) a k-means tree partitions badly: on
      citeulike-t (26k items) a tree of 161 leaves needs ~100 leaves searched for recall@100
      0.98 and is then slower than scoring every item with AH (recall@100 0.999 at ~0.4 ms);
    * from ``SCANN_TREE_FROM`` items: a tree of ``num_leaves = round(sqrt(num_items))`` leaves,
      within ``[32, 2000]`` and at most ``num_items // 50`` (ScaNN's ``min_partition_size``),
      unless given; ``num_leaves_to_search`` about ``2 sqrt(num_leaves)``
      (:func:`_num_to_search`). How many leaves a query must search depends on the data: the
      export tunes it against exact search (``cml_tf.serving.tune``); the layer also takes it
      per call.

    ``num_reordering_candidates = k * max(30, ceil(1000 / k))`` (at most ``num_items``), a
    multiple of ``k`` (at query time a larger ``k`` re-orders up to ``30 k``): ScaNN's AH with
    squared L2 cannot use residual quantisation ("Tree-AH with residual quantization only works
    with dot product"), so its scores are coarse and ~1000 exactly re-ordered candidates are
    what recall@k >= 0.98 needs (``benchmarks/retrieval_layers.py``).

    Returns ``{"brute_force", "num_leaves", "num_leaves_to_search",
    "num_reordering_candidates"}`` (``num_leaves`` ``None``: no tree).
    """
    n, k = int(num_items), int(k)
    if n <= 0 or k <= 0:
        raise ValueError(f"num_items and k must be positive, got {num_items} and {k}")
    if num_leaves is not None:
        if tree is False:
            raise ValueError("num_leaves needs a tree (tree=False was given)")
        tree = True
    if tree is None:
        if n < SCANN_BRUTE_FORCE_BELOW:
            return {"brute_force": True, "num_leaves": None, "num_leaves_to_search": None,
                    "num_reordering_candidates": None}
        tree = n >= SCANN_TREE_FROM
    reorder = int(min(k * max(REORDER_MULTIPLE, math.ceil(1000 / k)), n))
    if not tree:
        return {"brute_force": False, "num_leaves": None, "num_leaves_to_search": None,
                "num_reordering_candidates": reorder}
    if num_leaves is None:
        num_leaves = min(max(round(math.sqrt(n)), 32), 2000, max(n // 50, 1))
    num_leaves = int(min(max(num_leaves, 1), n))
    return {"brute_force": False, "num_leaves": num_leaves,
            "num_leaves_to_search": _num_to_search(num_leaves, n, k),
            "num_reordering_candidates": reorder}


class ScaNN(_RetrievalMixin, _tfrs_top_k.ScaNN):
    """ScaNN approximate top-K whose scores are ``-||q - v||^2`` (or ``q.v``), best first.

    A subclass of ``tfrs.layers.factorized_top_k.ScaNN`` (so ``isinstance`` checks and the
    ``scann_ops`` state stay TFRS's) that overrides:

    * ``index``: fills unset parameters from :func:`scann_defaults` (catalogue size and ``k``)
      and builds exact brute force (small catalogues), asymmetric hashing over every item +
      exact re-ordering (mid-size), or tree + asymmetric hashing + exact re-ordering (large);
    * ``call``: negates ScaNN's squared distances (TFRS returns them raw, smallest first; with
      ``metric="dot_product"`` ScaNN already returns dot products, largest first), pads to ``k``
      columns, and maps ScaNN's NaN-padded slots (index 0) to the padding identifier; it also
      raises ScaNN's re-ordering depth with ``k`` when ``k`` is larger than the constructor's
      (e.g. inside ``query_with_exclusions``), up to ``REORDER_MULTIPLE * k``, and takes the
      number of leaves to search per call;
    * ``query_with_exclusions``: the order-correct version of :class:`_RetrievalMixin`;
    * ``search_unsorted`` (what the export's serving graph calls): ScaNN's result as it comes,
      without ``call``'s padding and re-sort (the serving graph sorts once, after exclusions).

    The search depth used when a call does not give one is ``params["num_leaves_to_search"]``
    and ``params["num_reordering_candidates"]``; they may be changed after ``index`` (the export
    tunes them) and are read when a call is traced.

    The searcher's state is TFRS's: a ``scann_ops.ScannState`` module of ``tf.Variable``s in
    ``_serialized_searcher``, from which each traced call re-creates the searcher handle.

    A SavedModel that calls this layer contains ScaNN's custom ops: load it after ``import
    scann``.
    """

    def __init__(self, query_model: tf.keras.Model | None = None, k: int = 10,
                 metric: str = "squared_l2", num_leaves: int | None = None,
                 num_leaves_to_search: int | None = None,
                 num_reordering_candidates: int | None = None, training_iterations: int = 12,
                 dimensions_per_block: int = 2, parallelize_batch_searches: bool = True,
                 brute_force: bool | None = None, tree: bool | None = None,
                 name: str | None = None):
        """Args:
          query_model: optional Keras model mapping raw query features to query embeddings.
          k: default number of results.
          metric: ``"squared_l2"`` (ScaNN ``distance_measure="squared_l2"``, scores
            ``-||q - v||^2``) or ``"dot_product"``.
          num_leaves, num_leaves_to_search, num_reordering_candidates: ``None`` = from
            :func:`scann_defaults` at index time. ``num_leaves`` implies a tree.
          training_iterations: k-means iterations of ScaNN's tree.
          dimensions_per_block: asymmetric-hashing block size.
          parallelize_batch_searches: use ScaNN's parallel batched search.
          brute_force: force (True) or forbid (False) ScaNN's exact brute-force mode; ``None``
            follows :func:`scann_defaults` (brute force for small catalogues).
          tree: force (True) or forbid (False) the k-means tree; ``None`` follows
            :func:`scann_defaults` (a tree from ``SCANN_TREE_FROM`` items).
          name: layer name.
        """
        if tree is False and num_leaves is not None:
            raise ValueError("num_leaves needs a tree (tree=False was given)")
        super().__init__(query_model=query_model, k=k, distance_measure=_check_metric(metric),
                         num_leaves=num_leaves or 1, num_leaves_to_search=num_leaves_to_search or 1,
                         training_iterations=training_iterations,
                         dimensions_per_block=dimensions_per_block,
                         num_reordering_candidates=num_reordering_candidates,
                         parallelize_batch_searches=parallelize_batch_searches, name=name)
        self._init_retrieval(metric)
        self._requested = {"num_leaves": num_leaves, "num_leaves_to_search": num_leaves_to_search,
                           "num_reordering_candidates": num_reordering_candidates}
        self._dimensions_per_block = int(dimensions_per_block)
        self._brute_force_requested = brute_force
        self._tree_requested = tree
        self.params = None

    def _resolve_params(self, num_items: int) -> dict[str, bool | int | None]:
        requested_leaves = self._requested["num_leaves"]
        tree = True if requested_leaves is not None else self._tree_requested
        brute_force = self._brute_force_requested
        if brute_force is None:
            brute_force = (tree is None and
                           scann_defaults(num_items, self._k)["brute_force"])
        if brute_force:
            return {"brute_force": True, "num_leaves": None, "num_leaves_to_search": None,
                    "num_reordering_candidates": None}
        if tree is None:
            tree = num_items >= SCANN_TREE_FROM
        defaults = scann_defaults(num_items, self._k, requested_leaves, tree=tree)
        params = {key: (self._requested[key] if self._requested[key] is not None
                        else defaults[key]) for key in self._requested}
        if tree:
            params["num_leaves_to_search"] = min(params["num_leaves_to_search"],
                                                 params["num_leaves"])
        else:
            params["num_leaves"] = params["num_leaves_to_search"] = None
        return {"brute_force": False, **params}

    def index(self, candidates: tf.Tensor, identifiers: tf.Tensor | None = None) -> "ScaNN":
        from scann import scann_ops  # pylint: disable=import-outside-toplevel

        candidates = tf.convert_to_tensor(candidates, tf.float32)
        if candidates.shape.rank != 2:
            raise ValueError(f"The candidates tensor must be 2D (got {candidates.shape}).")
        n = int(candidates.shape[0])
        self.params = self._resolve_params(n)
        builder = scann_ops.builder(db=candidates, num_neighbors=min(self._k, n),
                                    distance_measure=self.metric)
        if self.params["brute_force"]:
            builder = builder.score_brute_force()
        else:
            if self.params["num_leaves"]:
                builder = builder.tree(
                    num_leaves=self.params["num_leaves"],
                    num_leaves_to_search=self.params["num_leaves_to_search"],
                    training_iterations=self._training_iterations,
                    min_partition_size=min(50, max(n // (2 * self.params["num_leaves"]), 1)))
            builder = builder.score_ah(dimensions_per_block=self._dimensions_per_block)
            if self.params["num_reordering_candidates"]:
                builder = builder.reorder(self.params["num_reordering_candidates"])
        # A unique shared name so that two layers never share a searcher (as TFRS does).
        searcher = builder.build(shared_name=f"{self.name}/{uuid.uuid4()}")
        self._serialized_searcher = searcher.serialize_to_module()
        self._store_identifiers(identifiers, n)
        self._reset_tf_function_cache()
        return self

    def call(self, queries: tf.Tensor | dict[str, tf.Tensor], k: int | None = None,
             num_leaves_to_search: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        return self._retrieve(queries, k, num_leaves_to_search=num_leaves_to_search)

    def _search_unsorted(self, queries, k):
        # ScaNN's own order (best first) and width (NaN-padded, or narrower when it found
        # fewer than k): search_unsorted's caller masks and sorts anyway.
        return self._search(queries, k, sort=False)

    def _search(self, queries, k, num_leaves_to_search=None, sort=True):
        from scann import scann_ops  # pylint: disable=import-outside-toplevel

        searcher = scann_ops.searcher_from_module(self._serialized_searcher)
        kwargs = {}
        reorder = self.params["num_reordering_candidates"]
        if reorder:
            # A larger k than the constructor's (e.g. k + #exclusions) re-orders proportionally
            # more candidates: `multiple` per result, at most REORDER_MULTIPLE.
            multiple = min(math.ceil(reorder / max(min(self._k, self._num_items), 1)),
                           REORDER_MULTIPLE)
            kwargs["pre_reorder_num_neighbors"] = tf.minimum(
                tf.maximum(reorder, multiple * k), self._num_items)
        if self.params["num_leaves"]:
            leaves = num_leaves_to_search or self.params["num_leaves_to_search"]
            kwargs["leaves_to_search"] = int(min(max(int(leaves), 1), self.params["num_leaves"]))
        search = (searcher.search_batched_parallel if self._parallelize_batch_searches
                  else searcher.search_batched)
        result = search(queries, final_num_neighbors=k, **kwargs)
        if not sort:
            scores = -result.distances if self.metric == "squared_l2" else result.distances
            return scores, result.indices, tf.math.is_nan(scores)
        distances, indices = _pad_to(result.distances, result.indices, k, float("nan"))
        scores = -distances if self.metric == "squared_l2" else distances
        # ScaNN already returns best first; sort anyway so that the contract never depends on it.
        invalid = tf.math.is_nan(scores)
        _, order = tf.math.top_k(tf.where(invalid, -np.inf, scores), k=k)
        return (tf.gather(scores, order, batch_dims=1), tf.gather(indices, order, batch_dims=1),
                tf.gather(invalid, order, batch_dims=1))

    def is_exact(self) -> bool:
        return bool(self.params and self.params["brute_force"])

    def get_config(self):
        return {**self._base_config(), **self._requested,
                "training_iterations": self._training_iterations,
                "dimensions_per_block": self._dimensions_per_block,
                "parallelize_batch_searches": self._parallelize_batch_searches,
                "brute_force": self._brute_force_requested, "tree": self._tree_requested}


# ----------------------------------------------------------------------------------------------
# Metric.
# ----------------------------------------------------------------------------------------------


class EuclideanFactorizedTopK(tfrs.metrics.FactorizedTopK):
    """``tfrs.metrics.FactorizedTopK`` whose score-based path uses the layer's metric.

    The stock metric scores the true candidate by ``q.v`` (TFRS metrics l.133-134), which is not
    comparable with our ``-||q - v||^2`` scores. This subclass scores it with ``candidates.score``
    (``-||q - v||^2`` for a squared-L2 layer, ``q.v`` for a dot-product one) and counts a hit at
    ``k`` when fewer than ``k`` retrieved scores beat it by more than a float32 rounding tolerance
    (``candidates.score_tolerance``): the true candidate is usually in the index too, and its
    copy there is scored by a matmul whose summation order differs from the row-wise score, so an
    exact comparison would sometimes rank it behind itself. With ``true_candidate_ids`` it is the
    stock id-based metric (which already works with our layers). Layers without ``score`` fall
    back to the stock dot product with no tolerance.
    """

    def update_state(self, query_embeddings: tf.Tensor, true_candidate_embeddings: tf.Tensor,
                     true_candidate_ids: tf.Tensor | None = None,
                     sample_weight: tf.Tensor | None = None) -> tf.Operation:
        if true_candidate_ids is not None:
            return super().update_state(query_embeddings, true_candidate_embeddings,
                                        true_candidate_ids, sample_weight)
        if not self._candidates.is_exact():
            raise ValueError(f"The candidate generation layer ({self._candidates}) does not "
                             "return exact results: pass `true_candidate_ids`.")
        queries = tf.convert_to_tensor(query_embeddings, tf.float32)
        positives = tf.convert_to_tensor(true_candidate_embeddings, tf.float32)
        if hasattr(self._candidates, "score"):
            threshold = (self._candidates.score(queries, positives)
                         + self._candidates.score_tolerance(queries, positives))
        else:
            threshold = tf.reduce_sum(queries * positives, axis=1)
        top_k_predictions, _ = self._candidates(queries, k=max(self._ks))
        # NaN padding compares False: never "better".
        better = tf.cast(top_k_predictions > threshold[:, tf.newaxis], tf.int32)
        update_ops = []
        for k, metric in zip(self._ks, self._top_k_metrics):
            hit = tf.reduce_sum(better[:, :k], axis=1) < k
            update_ops.append(metric.update_state(hit, sample_weight))
        return tf.group(update_ops)
