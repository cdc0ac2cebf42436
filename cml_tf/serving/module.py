"""The ``tf.Module`` that an export saves: lookup tables, vectors, the top-K index, signatures.

Everything a signature needs is TensorFlow state of this module -- ``tf.Variable``s, hash tables
initialised from vocabulary files saved as SavedModel assets, and the retrieval layer's
variables (for ScaNN its searcher state) -- so the SavedModel loads with ``tensorflow`` alone
(plus ``import scann`` for a ScaNN index), never with ``cml_tf``.

Signatures (``k`` fixed at export; ids are ``tf.string``; ``B`` = batch):

``serving_default``: ``user_id [B]`` -> ``item_ids [B, k]``, ``scores [B, k]``, ``known [B]``.
    The top-``k`` items of a known user, best first, without the items of the user's training
    input. An unknown id (``known`` false) gets the fallback: the items nearest to the centroid
    of all users (censored into the unit ball for squared_l2), scored like any other query.
``similar_items``: ``item_id [B]`` -> ``item_ids [B, k]``, ``scores [B, k]``, ``known [B]``.
    Nearest items to the item (itself excluded); an unknown item gets the same fallback.
``recommend_for_items``: ``item_ids [B, L]`` (padded with ``""``) -> ``item_ids [B, k]``,
    ``scores [B, k]``, ``known [B]``. Recommendations for an anonymous user who likes those
    items: the query is the mean of their vectors (censored into the unit ball,
    ``y / max(||y||, 1)``, for squared_l2; the plain mean for dot_product); the given items are
    excluded; unknown ids are ignored; a row without a known item gets the fallback and
    ``known`` false. A repeated id weighs twice. An export with ``item_queries="one_hot"``
    (item-item models: EASE) averages the items' unit vectors instead, here and in
    ``similar_items`` (:class:`~cml_tf.serving.spec.ExportSpec`).
``embed_items`` (models with item features only): ``feature_ids [B, F]`` (feature names,
    padded with ``""``; unknown names ignored), ``feature_values [B, F]`` float32 ->
    ``embeddings [B, dim]`` float32: the model's vectors for new (cold-start) items.
``recommend_filtered``, ``similar_items_filtered``, ``recommend_for_items_filtered``: the
    three above with two more inputs, ``include_items [B, L1]`` and ``exclude_items [B, L2]``
    (item ids, padded with ``""``; unknown ids ignored), and the same outputs: the best ``k``
    items among the allowed ones. A row's allowed items are its inclusion list when the row
    names any item (a row of padding only: every item), minus its exclusion list, minus what
    the unfiltered signature excludes (the user's training items, the item itself, the given
    items). An inclusion list is scored exactly, whatever the index, so its result is the exact
    top-k of the list; without one the index is searched ``k`` + the row's exclusions deep and
    the exclusions are dropped before the top ``k`` is taken (exact for ``brute_force``, up to
    the index's recall otherwise). An unknown query id (``known`` false) is answered from the
    users' centroid under the same filters.

Every input is checked first: one of the wrong rank (or filter rows that do not match the
batch) fails the call with a message that names the input and the shape it must have. The
signatures declare their inputs without a static shape so that this check runs in every
server: a declared shape would let TensorFlow fold the check away at load time without ever
comparing it with what a client sends.

Scores are higher-is-better: ``-||u - v||^2`` for squared_l2 (so in [-4, 0] in the unit ball),
``u . v`` for dot_product. Slots that cannot be filled (fewer than ``k`` items left after the
exclusions, or an approximate index that found fewer) hold ``item_ids`` ``""`` and ``scores``
NaN, at the end of the row.
"""

import pathlib

import numpy as np
import tensorflow as tf

from cml_tf.layers import retrieval
from cml_tf.serving.check import FILTERED, exact_fallback

INDEXES = ("scann", "partitioned", "brute_force")
FALLBACK = ("the k items nearest to the centroid of all user vectors (censored into the unit "
            "ball for squared_l2), found by exact search at export time and scored like any "
            "query; known = false")
_INT64_MAX = np.iinfo(np.int64).max


def build_index(name: str, vectors: np.ndarray, k: int, metric: str, options: dict | None = None):
    """A retrieval layer of ``cml_tf.layers.retrieval`` indexed on ``vectors`` with integer
    identifiers (the row positions). ``options`` are constructor arguments of the layer
    (``None`` or 0 values mean "default")."""
    options = {key: value for key, value in (options or {}).items() if given(value)}
    if name == "brute_force":
        layer = retrieval.BruteForce(k=k, metric=metric, **options)
    elif name == "partitioned":
        layer = retrieval.Partitioned(k=k, metric=metric, **options)
    elif name == "scann":
        layer = retrieval.ScaNN(k=k, metric=metric, **options)
    else:
        raise ValueError(f"index must be one of {INDEXES}, got {name!r}")
    return layer.index(vectors)


def index_parameters(layer) -> dict:
    """The parameters an index was built with, for the report."""
    if isinstance(layer, retrieval.ScaNN):
        return dict(layer.params)
    if isinstance(layer, retrieval.Partitioned):
        return {"num_partitions": layer.num_partitions,
                "num_partitions_to_search": layer.num_partitions_to_search,
                "max_partition_size": int(layer.partition_sizes.max())}
    return {}


def given(value) -> bool:
    """An index option that was set: not None, "" or 0 (``False`` is a setting)."""
    if value is None or isinstance(value, str) and not value:
        return False
    return isinstance(value, bool) or value != 0


def _shared_item_vectors(index, spec):
    """The exact index's candidate variable when it holds ``spec.item_vectors`` row for row:
    the export then stores (and a server loads) the item vectors once, not twice (EASE's are
    n_items x n_items)."""
    rows = index.candidate_rows() if isinstance(index, retrieval.BruteForce) else None
    if rows is None or tuple(rows.shape) != spec.item_vectors.shape:
        return None
    return rows


class _Untracked:
    """Holds an object without making it a dependency of the module (so the retrieval layer
    and the model's Keras layers are not serialised themselves; only their variables are)."""

    def __init__(self, value):
        self.value = value


def _write_lines(path: pathlib.Path, values) -> str:
    path.write_text("".join(f"{value}\n" for value in values), encoding="utf-8")
    return str(path)


def _vocabulary_table(path: str, size: int) -> tf.lookup.StaticHashTable:
    """id (one per line) -> line number, -1 for anything else."""
    initializer = tf.lookup.TextFileInitializer(
        path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER, vocab_size=size)
    return tf.lookup.StaticHashTable(initializer, default_value=-1)


class ServingModule(tf.Module):
    """The exported object (see the module docstring for the signatures).

    Args:
      spec: the :class:`~cml_tf.serving.spec.ExportSpec`.
      index: a retrieval layer indexed on ``spec.item_vectors`` with integer identifiers
        (:func:`build_index`).
      k: results per query.
      vocabulary_dir: an existing folder where the id vocabularies are written; ``tf.saved_model
        .save`` copies them into the export's ``assets/``.
    """

    def __init__(self, spec, index, k: int, vocabulary_dir: str):
        super().__init__(name="cml_tf_serving")
        if not 1 <= k <= spec.n_items:
            raise ValueError(f"k={k} must be between 1 and the number of items ({spec.n_items})")
        self._k, self._n_items, self._metric = int(k), spec.n_items, spec.metric
        self._one_hot_items = spec.item_queries == "one_hot"
        self._dim = spec.dim
        folder = pathlib.Path(vocabulary_dir)
        self.user_table = _vocabulary_table(
            _write_lines(folder / "user_ids.txt", spec.user_ids), spec.n_users)
        self.item_table = _vocabulary_table(
            _write_lines(folder / "item_ids.txt", spec.item_ids), spec.n_items)

        self.user_vectors = tf.Variable(spec.user_vectors, trainable=False, name="user_vectors")
        self.item_vectors = _shared_item_vectors(index, spec)
        if self.item_vectors is None:
            self.item_vectors = tf.Variable(spec.item_vectors, trainable=False,
                                            name="item_vectors")
        # Row 0 is the empty id of an unfilled slot: item position p is row p + 1, so that
        # position -1 maps to b"" with a single gather.
        self.item_id_strings = tf.Variable(
            np.concatenate([[b""], np.char.encode(spec.item_ids, "utf-8")]), trainable=False,
            name="item_id_strings")
        # Known items as sorted keys user * n_items + item, with a sentinel at the end so that
        # searchsorted always lands on a valid position.
        known = spec.known
        rows = np.repeat(np.arange(spec.n_users, dtype=np.int64), np.diff(known.indptr))
        keys = rows * spec.n_items + known.indices.astype(np.int64)
        self.known_keys = tf.Variable(np.append(np.sort(keys), _INT64_MAX), trainable=False,
                                      name="known_keys")
        self.known_counts = tf.Variable(np.diff(known.indptr).astype(np.int32), trainable=False,
                                        name="known_counts")
        # The fallback is computed exactly once, here, so every signature returns the same list.
        fallback_ids, fallback_scores = exact_fallback(spec, self._k)
        self.fallback_positions = tf.Variable(
            spec.item_index(fallback_ids).astype(np.int32), trainable=False,
            name="fallback_positions")
        self.fallback_scores = tf.Variable(fallback_scores.astype(np.float32), trainable=False,
                                           name="fallback_scores")

        self._index = _Untracked(index)
        self.index_variables = list(index.variables)
        if isinstance(index, retrieval.ScaNN):
            self.scann_state = index._serialized_searcher  # pylint: disable=protected-access

        self._embedder = None
        if spec.item_embedder is not None:
            self._n_features = spec.n_features
            self.feature_table = _vocabulary_table(
                _write_lines(folder / "feature_ids.txt", spec.feature_names), spec.n_features)
            self._embedder = _Untracked(spec.item_embedder)
            traced = tf.function(spec.item_embedder).get_concrete_function(
                tf.SparseTensorSpec([None, spec.n_features], tf.float32))
            self.embedder_variables = list(traced.variables)

        self.fallback_query = tf.Variable(spec.fallback_query(), trainable=False,
                                          name="fallback_query")
        # No static shapes: the signatures check them at run time (see the module docstring).
        ids, values = tf.TensorSpec(None, tf.string), tf.TensorSpec(None, tf.float32)
        self.recommend = tf.function(self._recommend, input_signature=[ids])
        self.similar_items = tf.function(self._similar_items, input_signature=[ids])
        self.recommend_for_items = tf.function(self._recommend_for_items, input_signature=[ids])
        self.recommend_filtered = tf.function(self._recommend_filtered,
                                              input_signature=[ids] * 3)
        self.similar_items_filtered = tf.function(self._similar_items_filtered,
                                                  input_signature=[ids] * 3)
        self.recommend_for_items_filtered = tf.function(self._recommend_for_items_filtered,
                                                        input_signature=[ids] * 3)
        if self._embedder is not None:
            self.embed_items = tf.function(self._embed_items, input_signature=[ids, values])

    # ---- signatures ------------------------------------------------------------------------

    def signatures(self) -> dict:
        """name -> concrete function, for ``tf.saved_model.save(..., signatures=...)``."""
        # Input names are the argument names: user_id, item_id, item_ids, feature_ids, ...
        signatures = {"serving_default": self.recommend.get_concrete_function(),
                      "similar_items": self.similar_items.get_concrete_function(),
                      "recommend_for_items": self.recommend_for_items.get_concrete_function()}
        for name in FILTERED:
            signatures[name] = getattr(self, name).get_concrete_function()
        if self._embedder is not None:
            signatures["embed_items"] = self.embed_items.get_concrete_function()
        return signatures

    def _recommend(self, user_id):
        queries, width, rows, known = self._user_queries(user_id)
        scores, positions, invalid = self._search(queries, width)
        invalid |= self._is_known(rows, positions) & known[:, None]
        scores, positions = _best(scores, positions, invalid, self._k)
        return self._outputs(positions, scores, known)

    def _similar_items(self, item_id):
        queries, rows, known = self._item_queries(item_id)
        scores, positions, invalid = self._search(queries, self._k + 1)
        invalid |= tf.equal(positions, rows[:, None]) & known[:, None]
        scores, positions = _best(scores, positions, invalid, self._k)
        return self._outputs(positions, scores, known)

    def _recommend_for_items(self, item_ids):
        queries, given, counts, known = self._liked_queries(item_ids)
        scores, positions, invalid = self._search(queries, self._k + tf.shape(given)[1])
        invalid |= _in_rows(self._row_keys(given), positions, self._n_items)
        scores, positions = _best(scores, positions, invalid, self._k)
        return self._outputs(positions, scores, known)

    def _recommend_filtered(self, user_id, include_items, exclude_items):
        queries, _, rows, known = self._user_queries(user_id)
        queries = tf.where(known[:, None], queries, self.fallback_query)
        counts = tf.where(known, tf.gather(self.known_counts, rows), 0)
        return self._filtered(queries, known, counts,
                              lambda p: self._is_known(rows, p) & known[:, None],
                              include_items, exclude_items, "user_id")

    def _similar_items_filtered(self, item_id, include_items, exclude_items):
        queries, rows, known = self._item_queries(item_id)
        queries = tf.where(known[:, None], queries, self.fallback_query)
        return self._filtered(queries, known, tf.cast(known, tf.int32),
                              lambda p: tf.equal(p, rows[:, None]) & known[:, None],
                              include_items, exclude_items, "item_id")

    def _recommend_for_items_filtered(self, item_ids, include_items, exclude_items):
        queries, given, counts, known = self._liked_queries(item_ids)
        queries = tf.where(known[:, None], queries, self.fallback_query)
        keys = self._row_keys(given)
        return self._filtered(queries, known, tf.cast(counts, tf.int32),
                              lambda p: _in_rows(keys, p, self._n_items),
                              include_items, exclude_items, "item_ids")

    def _embed_items(self, feature_ids, feature_values):
        feature_ids = _checked(feature_ids, "feature_ids", 2)
        feature_values = _checked(feature_values, "feature_values", 2)
        tf.debugging.assert_equal(tf.shape(feature_ids), tf.shape(feature_values),
                                  message="feature_ids and feature_values differ in shape")
        columns = self.feature_table.lookup(feature_ids)                           # [B, F]
        present = tf.where(columns >= 0)                                           # [N, 2]
        sparse = tf.sparse.reorder(tf.SparseTensor(
            tf.stack([present[:, 0], tf.gather_nd(columns, present)], axis=1),
            tf.gather_nd(feature_values, present),
            tf.stack([tf.shape(feature_ids, out_type=tf.int64)[0],
                      tf.constant(self._n_features, tf.int64)])))
        embeddings = tf.ensure_shape(self._embedder.value(sparse), [None, self._dim])
        return {"embeddings": tf.cast(embeddings, tf.float32)}

    def _filtered(self, queries, known, own_counts, is_own, include_items, exclude_items,
                  query_name):
        """The best ``k`` allowed items per row (module docstring): ``is_own(positions)`` marks
        what the unfiltered signature excludes, ``own_counts`` how many of them a row has."""
        include_items = _checked(include_items, "include_items", 2, rows_of=(queries,
                                                                             query_name))
        exclude_items = _checked(exclude_items, "exclude_items", 2, rows_of=(queries,
                                                                             query_name))
        has_inclusions = tf.reduce_any(tf.not_equal(include_items, ""), axis=1)   # [B]
        excluded = tf.cast(self.item_table.lookup(exclude_items), tf.int32)
        excluded_keys = self._row_keys(excluded)
        excluded_counts = tf.reduce_sum(tf.cast(excluded >= 0, tf.int32), axis=1)

        def drop(positions):
            return (positions < 0) | is_own(positions) | _in_rows(excluded_keys, positions,
                                                                   self._n_items)

        def from_index():
            width = self._k + tf.reduce_max(tf.concat([own_counts + excluded_counts, [0]], 0))
            scores, positions, invalid = self._search(queries, width)
            return _best(scores, positions, invalid | drop(positions), self._k)

        def from_inclusions():
            # Sorted, so that a repeated id is dropped and ties go to the lower position, as
            # in exact search; scored exactly against the unique items of the batch's lists.
            positions = tf.sort(tf.cast(self.item_table.lookup(include_items), tf.int32),
                                axis=1)
            previous = tf.concat([tf.fill([tf.shape(positions)[0], 1], -1), positions],
                                 axis=1)[:, :-1]
            unique, slot = tf.unique(tf.reshape(tf.maximum(positions, 0), [-1]))
            table = retrieval.score_matrix(queries, tf.gather(self._item_rows(), unique),
                                           self._metric)
            scores = tf.gather(table, tf.reshape(slot, tf.shape(positions)), batch_dims=1)
            invalid = drop(positions) | tf.equal(positions, previous)
            return _best(scores, positions, invalid, self._k)

        def nothing():
            batch = tf.shape(queries)[0]
            return tf.zeros([batch, self._k]), tf.fill([batch, self._k], -1)

        # Each path runs only when some row of the batch needs it.
        searched = tf.cond(tf.reduce_any(~has_inclusions), from_index, nothing)
        listed = tf.cond(tf.reduce_any(has_inclusions), from_inclusions, nothing)
        column = has_inclusions[:, None]
        scores = tf.where(column, listed[0], searched[0])
        positions = tf.where(column, listed[1], searched[1])
        ids = tf.gather(self.item_id_strings, positions + 1)      # position -1 -> b""
        return {"item_ids": ids, "scores": scores, "known": known}

    # ---- helpers ---------------------------------------------------------------------------

    def _query_vectors_of_items(self, rows):
        """The query vectors of items (table rows): their vectors, or e_i (``item_queries``)."""
        if self._one_hot_items:
            return tf.one_hot(rows, self._dim)
        return tf.gather(self._item_rows(), rows)

    def _item_rows(self):
        """The item vectors as a dense read. ``tf.gather`` on the variable itself would put it
        in TensorFlow's copy-on-read mode, and the exact index, which shares the variable
        (:func:`_shared_item_vectors`), would then copy all of it at its next search."""
        return self.item_vectors.value()

    def _user_queries(self, user_id):
        """(query vectors, search width, table rows, known) of a batch of user ids: the width is
        ``k`` plus the training-item count of the batch's most active known user, so that ``k``
        items are left after the exclusions (``k`` for an empty batch)."""
        users = self.user_table.lookup(_checked(user_id, "user_id", 1))
        known = users >= 0
        rows = tf.maximum(users, 0)
        counts = tf.where(known, tf.gather(self.known_counts, rows), 0)
        width = self._k + tf.maximum(tf.reduce_max(counts), 0)
        return tf.gather(self.user_vectors, rows), width, rows, known

    def _item_queries(self, item_id):
        """(item vectors, int32 rows, known) of a batch of item ids."""
        items = self.item_table.lookup(_checked(item_id, "item_id", 1))
        known = items >= 0
        rows = tf.cast(tf.maximum(items, 0), tf.int32)
        return self._query_vectors_of_items(rows), rows, known

    def _liked_queries(self, item_ids):
        """(queries, given positions [B, L] (-1: unknown or padding), known-id counts, known) of
        lists of liked items: the mean of the known items' vectors, censored into the unit ball
        for squared_l2."""
        items = self.item_table.lookup(_checked(item_ids, "item_ids", 2))         # [B, L]
        valid = items >= 0
        weights = tf.cast(valid, tf.float32)
        counts = tf.reduce_sum(weights, axis=1)
        vectors = self._query_vectors_of_items(tf.maximum(items, 0)) * weights[:, :, None]
        query = tf.reduce_sum(vectors, axis=1) / tf.maximum(counts, 1.0)[:, None]
        if self._metric == "squared_l2":
            query = query / tf.maximum(tf.norm(query, axis=1, keepdims=True), 1.0)
        return query, tf.cast(items, tf.int32), counts, counts > 0

    def _row_keys(self, positions):
        """Sorted keys ``row * (n_items + 1) + position`` of the known positions (>= 0) of each
        row, for :func:`_in_rows`; an end sentinel keeps every lookup in range."""
        rows = tf.range(tf.shape(positions, out_type=tf.int64)[0])[:, None]
        keys = tf.where(positions >= 0, rows * (self._n_items + 1) + tf.cast(positions, tf.int64),
                        -2)
        return tf.concat([tf.sort(tf.reshape(keys, [-1])), [_INT64_MAX]], axis=0)

    def _search(self, queries, width):
        """About the top-``width`` (clamped to all items) of the index, in any order: (scores,
        int32 positions, invalid) of the index's lean ``search_unsorted`` (no sorting:
        :func:`_best` masks and sorts once)."""
        scores, positions, invalid = self._index.value.search_unsorted(queries, width)
        return scores, tf.cast(positions, tf.int32), invalid

    def _is_known(self, rows, positions):
        keys = rows[:, None] * self._n_items + tf.cast(positions, tf.int64)
        flat = tf.reshape(keys, [-1])
        # Read the variable once and gather from the tensor: a ResourceGather on the variable
        # would switch it to copy-on-read, and every dense read (searchsorted) would then copy
        # all of it (1.2 ms per call at 2.5M known pairs).
        known_keys = self.known_keys.read_value()
        found = tf.gather(known_keys, tf.searchsorted(known_keys, flat))
        return tf.reshape(tf.equal(found, flat), tf.shape(keys))

    def _outputs(self, positions, scores, known):
        """Output dict; rows of unknown ids get the precomputed fallback (broadcast)."""
        column = known[:, None]
        positions = tf.where(column, positions, self.fallback_positions)
        scores = tf.where(column, scores, self.fallback_scores)
        ids = tf.gather(self.item_id_strings, positions + 1)      # position -1 -> b""
        return {"item_ids": ids, "scores": scores, "known": known}


def _checked(value, name: str, rank: int, rows_of=None):
    """``value`` once it is known to have ``rank`` dimensions (and, with ``rows_of=(tensor,
    its input name)``, as many rows as that tensor); otherwise the call fails with a message
    naming the input and the shape it must have. The result has a static rank."""
    shape = "[batch]" if rank == 1 else "[batch, length]"
    checks = [tf.debugging.Assert(tf.equal(tf.rank(value), rank),
                                  [f"serving input {name} must have shape {shape} (rank {rank}); "
                                   "got shape", tf.shape(value)])]
    with tf.control_dependencies(checks):
        dims = tf.shape(value)
        if rows_of is not None:
            other, other_name = rows_of
            checks = [tf.debugging.Assert(
                tf.equal(dims[0], tf.shape(other)[0]),
                [f"serving input {name} must have one row per entry of {other_name}: got",
                 dims[0], "rows for", tf.shape(other)[0]])]
        with tf.control_dependencies(checks):
            return tf.reshape(value, [dims[0]] if rank == 1 else [dims[0], dims[1]])


def _in_rows(keys, positions, n_items: int):
    """``positions[b, j]`` is among the positions of row ``b`` behind ``keys`` (from
    :meth:`ServingModule._row_keys`); a negative position never is. Flat keys and a 1-D
    ``searchsorted``, so any batch size works (an empty one too)."""
    rows = tf.range(tf.shape(positions, out_type=tf.int64)[0])[:, None]
    wanted = tf.reshape(rows * (n_items + 1) + tf.cast(positions, tf.int64), [-1])
    found = tf.gather(keys, tf.searchsorted(keys, wanted))
    return tf.reshape(tf.equal(found, wanted), tf.shape(positions))


def _best(scores, positions, invalid, k: int):
    """The best ``k`` slots that are not ``invalid`` (excluded, empty or NaN), best first;
    invalid slots at the end as (NaN, -1). Pads to ``k`` columns when fewer were retrieved.

    One ``top_k`` over the scores with invalid slots masked to ``-inf`` (valid scores are
    finite), so the sorted scores are ``top_k``'s values and ``-inf`` marks what is left empty;
    ``k`` is a Python int, so the outputs have the static shape ``[None, k]``."""
    masked = tf.where(invalid, -np.inf, scores)
    paddings = [[0, 0], [0, tf.maximum(k - tf.shape(scores)[1], 0)]]
    masked = tf.pad(masked, paddings, constant_values=-np.inf)
    positions = tf.pad(positions, paddings, constant_values=-1)
    # tf.math.top_k is stable: equal scores keep the index's order.
    top, order = tf.math.top_k(masked, k=k)
    empty = tf.math.is_inf(top)
    scores = tf.where(empty, np.nan, top)
    positions = tf.where(empty, -1, tf.gather(positions, order, batch_dims=1))
    return scores, positions
