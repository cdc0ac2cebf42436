"""``EuclideanFactorizedTopK``: TFRS's retrieval metric with the layer's own score."""

import tensorflow as tf
import tensorflow_recommenders as tfrs


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
