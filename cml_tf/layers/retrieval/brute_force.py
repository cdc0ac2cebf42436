"""Exact top-K: one matmul against every candidate, standard TensorFlow ops only."""

import tensorflow as tf

from cml_tf.layers.retrieval.common import (_RetrievalMixin, _tfrs_top_k, row_sq_norms,
                                            rows_variable, score_matrix)


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
        if not hasattr(candidates, "shape"):  # a list; arrays and tensors are copied by rows
            candidates = tf.convert_to_tensor(candidates, tf.float32)
        if len(candidates.shape) != 2:
            raise ValueError(f"The candidates tensor must be 2D (got {candidates.shape}).")
        self._candidates = rows_variable(candidates, "candidates")
        self._candidate_sq_norms = tf.Variable(row_sq_norms(self._candidates), trainable=False,
                                               name="candidate_sq_norms")
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

    def candidate_rows(self) -> tf.Variable | None:
        """The indexed candidates when row i is identifier i (``index`` without identifiers),
        else ``None``: a caller that also needs the vectors by position (the export's item
        vectors) can share this variable instead of holding a second copy."""
        return self._candidates if self._row_identifiers else None

    def get_config(self):
        return self._base_config()
