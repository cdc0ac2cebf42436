"""Sampled matrix factorisation: BPR-MF and WARP-MF (paper sections 2.3.2 and 4.2.1).

Score ``s(i, j) = u_i . v_j + b_j`` (the item bias b_j is optional). The bias is carried as one
more coordinate -- user vectors end in a constant 1, item vectors in b_j -- so scoring,
``recommend`` and the export's maximum-inner-product retrieval (``metric = "dot_product"``) see
plain vectors and stay exact.

Per positive pair (i, j) with U sampled negatives (hardest k*, shared sampler of
:mod:`cml_tf.models.sampled`):

    BPR:  -log sigmoid(s(i, j) - s(i, k*))                        (U = 1: Rendle et al.'s BPR)
    WARP: log(floor(J M / U) + 1) [m - s(i, j) + s(i, k*)]_+      (M impostors among the U;
                                                                   the rank weight CML uses)

plus ``lambda_u ||u_i||^2 + lambda_v (||v_j||^2 + ||v_k*||^2)`` on the rows of the batch (the
bias coordinate included), so the cost of a step does not grow with the tables.
"""

import tensorflow as tf

from cml_tf.models.ranking import check_non_negative, check_positive
from cml_tf.models.sampled import SampledPairwiseModel, bpr_loss, warp_loss

LOSSES = ("bpr", "warp")


class DotProductModel(SampledPairwiseModel):
    """Shared parts of the sampled dot-product models: loss choice, L2 on the batch's rows,
    user table with the constant bias coordinate, logging.

    Args:
      n_users, n_items, num_negatives, known_positives, seed, jit_sampling, n_known: see
        :class:`~cml_tf.models.sampled.SampledPairwiseModel`.
      dim: r, the number of factors (the exported vectors have r + 1 coordinates with a bias).
      loss: ``"bpr"`` or ``"warp"``.
      margin: the WARP hinge margin (on scores).
      lambda_u, lambda_v: L2 weights on the batch's user rows and item rows.
      use_bias: learn an item bias.
      init_scale: standard deviation of the initial factors.
    """

    metric = "dot_product"

    def __init__(self, n_users: int, n_items: int, dim: int = 100, loss: str = "warp",
                 margin: float = 1.0, num_negatives: int = 20, lambda_u: float = 0.0,
                 lambda_v: float = 0.0, use_bias: bool = True, init_scale: float = 0.01,
                 **kwargs):
        super().__init__(n_users, n_items, num_negatives=num_negatives, **kwargs)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        check_positive(dim=dim, margin=margin, init_scale=init_scale)
        check_non_negative(lambda_u=lambda_u, lambda_v=lambda_v)
        self.dim, self.loss_name, self.margin = int(dim), loss, float(margin)
        self.lambda_u, self.lambda_v = float(lambda_u), float(lambda_v)
        self.use_bias, self.init_scale = bool(use_bias), float(init_scale)
        self.user_embedding = tf.keras.layers.Embedding(
            self.n_users, self.user_dim, name="users",
            embeddings_initializer=tf.keras.initializers.RandomNormal(
                stddev=self.init_scale, seed=self.seed))
        self.user_embedding.build((None,))

    @property
    def user_dim(self) -> int:
        """Width of the user table (the bias coordinate is added, not stored)."""
        return self.dim

    def _names(self):
        names = ["loss", "pair_loss"]
        if self.lambda_u or self.lambda_v:
            names.append("l2_loss")
        if self.loss_name == "warp":
            names += ["impostor_fraction", "rank_weight"]
        return names

    def _with_bias_one(self, vectors):
        if not self.use_bias:
            return vectors
        return tf.concat([vectors, tf.ones_like(vectors[..., :1])], axis=-1)

    def user_vectors_for(self, users, training=False):
        return self._with_bias_one(self.user_embedding(users))

    def l2_rows(self, batch):
        """The L2 penalty on the batch's rows; hybrids override which rows are free."""
        return (self.lambda_u * tf.reduce_sum(tf.square(batch.u))
                + self.lambda_v * (tf.reduce_sum(tf.square(batch.v_pos))
                                   + tf.reduce_sum(tf.square(batch.v_hard))))

    def pairwise_loss(self, batch):
        diagnostics = {}
        if self.loss_name == "warp":
            pair_loss, impostors, weight = warp_loss(batch, self.margin, self.n_items)
            diagnostics = {"impostor_fraction": tf.reduce_mean(
                tf.cast(impostors, tf.float32)) / self.num_negatives,
                "rank_weight": tf.reduce_mean(weight)}
        else:
            pair_loss = bpr_loss(batch)
        parts = {"pair_loss": pair_loss}
        if self.lambda_u or self.lambda_v:
            parts["l2_loss"] = self.l2_rows(batch)
        return parts, diagnostics

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "loss": self.loss_name,
                "margin": self.margin, "lambda_u": self.lambda_u, "lambda_v": self.lambda_v,
                "use_bias": self.use_bias, "init_scale": self.init_scale}

    @classmethod
    def from_interactions(cls, train, use_features: bool = True, **hyperparameters):
        """A model sized for ``train`` (an Interactions) and its positives."""
        del use_features  # pure collaborative filtering
        return cls(train.n_users, train.n_items, known_positives=train.matrix,
                   **hyperparameters)


class MatrixFactorization(DotProductModel):
    """A user table and an item table (+ bias): the pure collaborative dot-product model."""

    def __init__(self, n_users: int, n_items: int, **kwargs):
        super().__init__(n_users, n_items, **kwargs)
        self.item_embedding = tf.keras.layers.Embedding(
            self.n_items, self.dim + int(self.use_bias), name="items",
            embeddings_initializer=_item_initializer(self.dim, self.use_bias, self.init_scale,
                                                     self.seed))
        self.item_embedding.build((None,))
        self._init_trackers(self._names())
        self.built = True

    def item_vectors_for(self, items, training=False):
        return self.item_embedding(items)

    def all_item_vectors(self):
        return tf.convert_to_tensor(self.item_embedding.embeddings)

    def all_user_vectors(self):
        return self._with_bias_one(tf.convert_to_tensor(self.user_embedding.embeddings))


@tf.keras.utils.register_keras_serializable("cml_tf")
class BPRMF(MatrixFactorization):
    """BPR-MF (Rendle et al.): log-sigmoid pairwise loss, one uniform negative per positive.

    ``num_negatives > 1`` keeps the highest-scored of the U draws (adaptive sampling)."""

    def __init__(self, n_users: int, n_items: int, loss: str = "bpr", num_negatives: int = 1,
                 **kwargs):
        super().__init__(n_users, n_items, loss=loss, num_negatives=num_negatives, **kwargs)


@tf.keras.utils.register_keras_serializable("cml_tf")
class WARPMF(MatrixFactorization):
    """WARP-MF (Weston et al.; LightFM's WARP): CML's rank weight and sampler on dot products."""

    def __init__(self, n_users: int, n_items: int, loss: str = "warp", num_negatives: int = 20,
                 **kwargs):
        super().__init__(n_users, n_items, loss=loss, num_negatives=num_negatives, **kwargs)


@tf.keras.utils.register_keras_serializable("cml_tf")
class FactorInitializer(tf.keras.initializers.Initializer):
    """N(0, stddev^2) factors in the first ``dim`` columns; any further column (the bias) 0."""

    def __init__(self, dim: int, stddev: float, seed=None):
        self.dim, self.stddev, self.seed = int(dim), float(stddev), seed

    def __call__(self, shape, dtype=None, **kwargs):
        values = tf.keras.initializers.RandomNormal(stddev=self.stddev, seed=self.seed)(
            shape, dtype=dtype)
        return tf.concat([values[:, :self.dim], tf.zeros_like(values[:, self.dim:])], axis=1)

    def get_config(self):
        return {"dim": self.dim, "stddev": self.stddev, "seed": self.seed}


def _item_initializer(dim, use_bias, scale, seed):
    """Item rows: N(0, scale^2) factors, the bias coordinate (last) at 0."""
    del use_bias  # a table without bias column has no column past dim
    return FactorInitializer(dim, scale, seed if seed is None else seed + 1)
