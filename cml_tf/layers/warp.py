"""WARP-weighted hinge loss (paper eq. 1 with the section 3.2 rank weight).

The core, :func:`warp_hinge`, works on scores (higher is better), so the same code serves CML
(score = minus the squared distance) and dot-product models (WARP-MF); the layer
:class:`WarpHingeLoss` is CML's view of it on squared distances.
"""

import tensorflow as tf


def rank_weight(impostors, num_negatives, n_items) -> tf.Tensor:
    """log(floor(J * M / U) + 1) for M impostors among U samples out of J items (float32)."""
    impostors = tf.cast(impostors, tf.float32)
    rank = tf.floor(n_items * impostors / tf.cast(num_negatives, tf.float32))
    return tf.math.log(rank + 1.0)


def estimated_rank(impostor, rank_factors):
    """sum_s 1{sample s is an impostor} c_s: the importance-weighted count of impostors.

    With c_s = 1 / (U q(k_s)) for U i.i.d. draws from a proposal q over the candidates (see
    :meth:`cml_tf.layers.sampler.NegativeSampler.rank_factors`), each term has expectation
    sum_k q(k) 1{k impostor} / (U q(k)), so the sum is an unbiased estimate of the number of
    impostors among all candidates, whatever q is (as long as q > 0 wherever an impostor may
    be). The uniform proposal gives c = J / U and the paper's J M / U.
    """
    return tf.reduce_sum(tf.where(impostor, rank_factors, 0.0), axis=1)


def warp_hinge(positive_scores, negative_scores, margin, n_items, rank_factors=None):
    """Per pair with U sampled negatives (scores: higher is better):

        violation_k = m - (s_pos - s_k)
        M = #{k : violation_k > 0}, w = log(floor(J M / U) + 1)  (no gradient through w)
        loss = w * [max_k violation_k]_+

    With ``rank_factors`` [N, U] (negatives drawn from a non-uniform proposal), the rank is the
    unbiased importance-weighted estimate instead, w = log(floor(sum_k 1{violation_k > 0} c_k) +
    1) (:func:`estimated_rank`). A negative score of -inf marks a sample to ignore. Returns
    ``(loss, impostors, weight)``.
    """
    violation = margin - (positive_scores[:, None] - negative_scores)
    impostor = violation > 0
    impostors = tf.reduce_sum(tf.cast(impostor, tf.int32), axis=1)
    if rank_factors is None:
        weight = rank_weight(impostors, tf.shape(negative_scores)[1], n_items)
    else:
        weight = tf.math.log(tf.floor(estimated_rank(impostor, rank_factors)) + 1.0)
    weight = tf.stop_gradient(weight)
    return weight * tf.nn.relu(tf.reduce_max(violation, axis=1)), impostors, weight


@tf.keras.utils.register_keras_serializable("cml_tf")
class WarpHingeLoss(tf.keras.layers.Layer):
    """CML's metric loss. Per positive pair (i, j) with U sampled negatives k:

        violation_k = m + d(i, j)^2 - d(i, k)^2
        M           = #{k : violation_k > 0}                 (impostors among the U samples)
        rank        = floor(J * M / U)                       (J = number of items)
        w           = log(rank + 1)                          (no gradient flows through w)
        loss        = w * [m + d(i, j)^2 - min_k d(i, k)^2]_+

    Only the hardest negative (the one with the smallest distance) carries gradient. No impostor
    gives weight 0 and loss 0; U impostors give weight log(J + 1).

    Call with ``positive_distances`` [N] and ``negative_distances`` [N, U] (squared Euclidean);
    returns ``(loss [N], impostors [N] int32, weight [N])``. A negative distance of +inf marks a
    sample to ignore (it is never an impostor). Negatives drawn from a non-uniform proposal pass
    ``rank_factors`` [N, U]: the rank is then the importance-weighted estimate of
    :func:`estimated_rank`, rank = floor(sum_k 1{violation_k > 0} (1 - Q_i) / (U q(k))), which is
    unbiased for the number of impostors among the items user i does not know.
    """

    def __init__(self, margin: float, n_items: int, **kwargs):
        super().__init__(**kwargs)
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.margin, self.n_items = float(margin), int(n_items)

    def rank_weight(self, impostors: tf.Tensor, num_negatives) -> tf.Tensor:
        """log(floor(J * M / U) + 1), as float32."""
        return rank_weight(impostors, num_negatives, self.n_items)

    def call(self, positive_distances, negative_distances, rank_factors=None):
        return warp_hinge(-positive_distances, -negative_distances, self.margin, self.n_items,
                          rank_factors)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "n_items": self.n_items}
