"""Partitioned (k-means / IVF) approximate top-K from standard TensorFlow ops (loads in a stock
TF Serving): k-means partitions of the items, a query scans the partitions with the nearest
centroids and re-ranks their items exactly."""

import math

import numpy as np
import tensorflow as tf

from cml_tf.layers.retrieval.common import (_num_to_search, _RetrievalMixin, _tfrs_top_k,
                                            score_matrix)


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


def partitioned_defaults(num_items: int, k: int = 10,
                         num_partitions: int | None = None) -> dict[str, int]:
    """Default ``num_partitions`` and ``num_partitions_to_search`` for :class:`Partitioned`.

    ``num_partitions = round(2 sqrt(num_items))``, within ``[1, 8192]`` and at most
    ``num_items // 16`` (partitions of >= 16 items on average; under 32 items that is a single
    partition, i.e. brute force), unless given: on trained CML vectors (260,000 and 1,000,000
    items, ``benchmarks/retrieval.py``) 2 sqrt(n) partitions reach recall@50 0.985 with about
    2% and 1% of the items scanned, and scoring that many centroids costs less than 5% of a
    query. ``num_partitions_to_search`` from :func:`_num_to_search` (about
    ``2 sqrt(num_partitions)``, deeper than most data need: the export tunes it).
    """
    n, k = int(num_items), int(k)
    if n <= 0 or k <= 0:
        raise ValueError(f"num_items and k must be positive, got {num_items} and {k}")
    if num_partitions is None:
        num_partitions = min(max(round(2 * math.sqrt(n)), 1), 8192, max(n // 16, 1))
    num_partitions = int(min(max(num_partitions, 1), n))
    return {"num_partitions": num_partitions,
            "num_partitions_to_search": _num_to_search(num_partitions, n, k)}


class Partitioned(_RetrievalMixin, _tfrs_top_k.TopK):
    """Approximate top-K from k-means partitions, in standard TensorFlow ops (an IVF index).

    Index time (numpy, deterministic by ``seed``): :func:`kmeans` splits the items into
    ``num_partitions`` partitions (optionally, partitions over ``max_partition_size_factor``
    times the mean size are split further, :func:`split_large_partitions`) and empty ones are
    dropped; the default ``num_partitions_to_search`` is computed from the final count
    (:func:`partitioned_defaults`). Each partition is stored as a run of whole blocks of
    ``block_size`` rows -- ``blocks[offsets[p]:offsets[p + 1]]`` is partition ``p``, its last
    block padded with empty rows -- with the rows' ``||v||^2`` and item positions, so that the
    items of a partition are a few contiguous ``[block_size, dim]`` slices: gathering the
    probed partitions copies one block per index instead of one row.

    Query time, vectorised over the batch: score the centroids with the layer's metric and take
    the ``num_partitions_to_search`` best per query; gather the blocks of every partition probed
    by some query of the batch once (``tf.ragged.range`` over the block offsets), score them
    against every query with one matmul (``-||q - v||^2`` or ``q.v``), mask empty rows and the
    partitions a query did not probe with ``-inf``, and keep the top ``k``. For one query that
    scans about ``num_partitions_to_search / num_partitions`` of the catalogue, in about
    ``2 num_partitions_to_search`` block copies. A large batch probes most partitions and costs
    about as much as :class:`BruteForce` (use that one for offline evaluation). Searching every
    partition returns the exact (brute-force) result. Every op is a stock TensorFlow kernel, so
    a SavedModel using this layer loads in TF Serving without ScaNN; all state is in
    ``tf.Variable`` objects.
    """

    def __init__(self, query_model: tf.keras.Model | None = None, k: int = 10,
                 metric: str = "squared_l2", num_partitions: int | None = None,
                 num_partitions_to_search: int | None = None, kmeans_iterations: int = 10,
                 max_partition_size_factor: float | None = None, block_size: int = 16,
                 seed: int = 0, name: str | None = None):
        """Args:
          query_model: optional Keras model mapping raw query features to query embeddings.
          k: default number of results.
          metric: ``"squared_l2"`` or ``"dot_product"`` (centroid routing and re-ranking use it;
            the partitions are k-means in squared L2 either way).
          num_partitions, num_partitions_to_search: defaults from :func:`partitioned_defaults`
            at index time. ``num_partitions_to_search`` can also be passed to ``call``.
          kmeans_iterations: Lloyd iterations at index time.
          max_partition_size_factor: partitions larger than this times the mean partition size
            are split (:func:`split_large_partitions`), which adds partitions; ``None`` (the
            default) keeps the k-means partitions as they are: with block storage an uneven
            partition costs no padding, and on trained CML vectors the k-means partitions
            reach a given recall with fewer items scanned than split ones.
          block_size: rows per storage block (the unit of the gather).
          seed: k-means seed.
          name: layer name.
        """
        super().__init__(k=k, name=name)
        self._init_retrieval(metric)
        self.query_model = query_model
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self._requested_num_partitions = num_partitions
        self._requested_num_partitions_to_search = num_partitions_to_search
        self._kmeans_iterations = int(kmeans_iterations)
        self._max_partition_size_factor = max_partition_size_factor
        self._block_size = int(block_size)
        self._seed = int(seed)
        self.num_partitions = None
        self.num_partitions_to_search = None
        self._sizes = None

    def index(self, candidates: tf.Tensor,
              identifiers: tf.Tensor | None = None) -> "Partitioned":
        vectors = np.asarray(candidates, np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"The candidates tensor must be 2D (got {vectors.shape}).")
        n, dim = vectors.shape
        requested = partitioned_defaults(n, self._k, self._requested_num_partitions)
        centroids, assignment = kmeans(vectors, requested["num_partitions"],
                                       self._kmeans_iterations, self._seed)
        if self._max_partition_size_factor:
            max_size = math.ceil(self._max_partition_size_factor * n / centroids.shape[0])
            centroids, assignment = split_large_partitions(
                vectors, centroids, assignment, max_size, self._kmeans_iterations, self._seed)
        counts = np.bincount(assignment, minlength=centroids.shape[0])
        kept = np.flatnonzero(counts)
        remap = np.zeros(centroids.shape[0], np.int64)
        remap[kept] = np.arange(kept.size)
        assignment, centroids, sizes = remap[assignment], centroids[kept], counts[kept]

        # Block layout: partition p owns blocks offsets[p]:offsets[p + 1]; row r of the flat
        # block storage holds item rows[r] (-1: an empty row at the end of a partition).
        bs = self._block_size
        blocks_per_partition = -(-sizes // bs)
        offsets = np.concatenate([[0], np.cumsum(blocks_per_partition)]).astype(np.int32)
        order = np.argsort(assignment, kind="stable")               # items by partition
        first_row = np.repeat(offsets[:-1].astype(np.int64) * bs, sizes)
        rank_in_partition = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        rows = np.full(int(offsets[-1]) * bs, -1, np.int64)
        rows[first_row + rank_in_partition] = order
        stored = np.zeros((rows.size, dim), np.float32)
        stored[rows >= 0] = vectors[rows[rows >= 0]]

        self.num_partitions = int(kept.size)
        self._sizes = sizes.astype(np.int64)
        to_search = (self._requested_num_partitions_to_search
                     or partitioned_defaults(n, self._k, self.num_partitions)
                     ["num_partitions_to_search"])
        self.num_partitions_to_search = int(min(max(to_search, 1), self.num_partitions))
        self._centroids = tf.Variable(centroids, trainable=False, name="centroids")
        self._centroid_sq_norms = tf.Variable(np.einsum("ij,ij->i", centroids, centroids),
                                              trainable=False, name="centroid_sq_norms")
        self._blocks = tf.Variable(stored.reshape(-1, bs, dim), trainable=False, name="blocks")
        self._block_sq_norms = tf.Variable(np.einsum("ij,ij->i", stored, stored).reshape(-1, bs),
                                           trainable=False, name="block_sq_norms")
        self._block_items = tf.Variable(rows.astype(np.int32).reshape(-1, bs), trainable=False,
                                        name="block_items")
        self._block_offsets = tf.Variable(offsets, trainable=False, name="block_offsets")
        self._store_identifiers(identifiers, n)
        self._reset_tf_function_cache()
        return self

    @property
    def partition_sizes(self) -> np.ndarray:
        """Items per partition."""
        return self._sizes

    def call(self, queries: tf.Tensor | dict[str, tf.Tensor], k: int | None = None,
             num_partitions_to_search: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        return self._retrieve(queries, k, num_partitions_to_search=num_partitions_to_search)

    def _search(self, queries, k, num_partitions_to_search=None):
        probe = num_partitions_to_search or self.num_partitions_to_search
        probe = min(int(probe), self.num_partitions)
        bs, dim = self._block_size, self._blocks.shape[-1]
        centroid_scores = score_matrix(queries, self._centroids, self.metric,
                                       self._centroid_sq_norms)
        _, probed = tf.math.top_k(centroid_scores, k=probe)                    # [B, probe]
        # Blocks of every partition probed by some query of the batch: one gather, one matmul.
        union = tf.unique(tf.reshape(probed, [-1])).y                          # [U]
        first = tf.gather(self._block_offsets, union)
        count = tf.gather(self._block_offsets, union + 1) - first
        blocks = tf.ragged.range(first, first + count).flat_values             # [NB]
        rows = tf.reshape(tf.gather(self._block_items, blocks), [-1])          # [NB * bs]
        scores = score_matrix(queries, tf.reshape(tf.gather(self._blocks, blocks), [-1, dim]),
                              self.metric,
                              tf.reshape(tf.gather(self._block_sq_norms, blocks), [-1]))
        # Keep a row for query b when b probed its partition and the row is not padding.
        batch = tf.shape(queries)[0]
        probed_mask = tf.scatter_nd(
            tf.stack([tf.repeat(tf.range(batch), probe), tf.reshape(probed, [-1])], axis=1),
            tf.ones([batch * probe], tf.int32), [batch, self.num_partitions]) > 0   # [B, P]
        keep = tf.repeat(tf.gather(probed_mask, tf.repeat(union, count), axis=1), bs, axis=1)
        keep &= rows[tf.newaxis, :] >= 0
        scores = tf.where(keep, scores, tf.constant(-np.inf, tf.float32))
        # Fewer candidates than k: pad with empty slots.
        missing = tf.maximum(k - tf.shape(rows)[0], 0)
        scores = tf.pad(scores, [[0, 0], [0, missing]], constant_values=-np.inf)
        rows = tf.pad(rows, [[0, missing]])
        top_scores, order = tf.math.top_k(scores, k=k)
        invalid = tf.math.is_inf(top_scores)
        return top_scores, tf.where(invalid, 0, tf.gather(rows, order)), invalid

    def is_exact(self) -> bool:
        return self.num_partitions is not None and \
            self.num_partitions_to_search >= self.num_partitions

    def get_config(self):
        return {**self._base_config(), "num_partitions": self._requested_num_partitions,
                "num_partitions_to_search": self._requested_num_partitions_to_search,
                "kmeans_iterations": self._kmeans_iterations,
                "max_partition_size_factor": self._max_partition_size_factor,
                "block_size": self._block_size, "seed": self._seed}
