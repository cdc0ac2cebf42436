"""ScaNN top-K (tree + asymmetric hashing + exact re-ordering) with CML's score convention; a
SavedModel that uses it needs ``import scann`` to load."""

import math
import uuid

import numpy as np
import tensorflow as tf

from cml_tf.layers.retrieval.common import (_check_metric, _num_to_search, _pad_to,
                                            _RetrievalMixin, _tfrs_top_k)


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
