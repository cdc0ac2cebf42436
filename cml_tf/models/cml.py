"""Collaborative Metric Learning (Hsieh et al., WWW 2017), with the optional feature prior (CML+F).

Users u_i and items v_j are points of R^r inside the unit ball. One training step on a batch of N
positive pairs (i, j) does, on device (paper section 3.5):

1. sample U negatives k per pair uniformly over the items, redrawing known positives of user i;
2. compute d(i, k)^2 for all of them without gradient, count the impostors M
   (m + d(i, j)^2 - d(i, k)^2 > 0) and keep the hardest negative k* = argmin_k d(i, k)^2;
3. differentiate, through the rows u_i, v_j, v_k* only (sparse ``IndexedSlices`` gradients),

       L = sum_pairs log(floor(J M / U) + 1) [m + d(i, j)^2 - d(i, k*)^2]_+      (L_m, eq. 1)
         + lambda_c L_c(u_i, v_j, v_k* of the batch)                            (covariance)
         + lambda_f sum_{j in B} ||f(x_j) - v_j||^2                           (CML+F only)

   where B holds, once each, the batch's positives and hardest negatives plus one uniformly
   drawn item per pair (a stochastic estimate of the paper's sum over all items: rarely liked
   items feel the prior as often as popular ones);

4. apply the optimizer (AdaGrad by default) and censor exactly the touched rows,
   y <- y / max(||y||, 1), so no row ever leaves the ball and a step costs the same whatever the
   size of the tables. Under a ``tf.distribute`` strategy the touched rows of all replicas are
   censored, so rows updated through another replica's gradients are censored too. With
   :class:`~cml_tf.optimizers.SparseAdagrad` the optimizer censors the rows as it writes them.
   Under ``ParameterServerStrategy`` the tables are sharded over the ps tasks
   (:mod:`cml_tf.distribute`): rows are read with :func:`~cml_tf.layers.embedding.lookup`, and
   each shard's gradient, update and censoring touch only that shard's rows of the step.

Scores are minus squared distances: ``score(users)[b, j] = -||u_b - v_j||^2`` (higher is better).
"""

import numpy as np
import tensorflow as tf

from cml_tf.layers.covariance import CovarianceRegularizer
from cml_tf.layers.embedding import UnitBallEmbedding, censor, lookup, shards
from cml_tf.layers.feature_prior import FeaturePrior, SparseRows
from cml_tf.layers.sampler import NegativeSampler
from cml_tf.layers.warp import WarpHingeLoss
from cml_tf.models.fitting import OneIteratorFit
from cml_tf.models.ranking import (TopK, check_features, check_k, check_non_negative,
                                   check_positive, mask_themselves)
from cml_tf.optimizers import SparseAdagrad

_LOGGED = ("loss", "metric_loss", "covariance_loss", "feature_loss", "impostor_fraction",
           "rank_weight")  # per step, averaged over the epoch by Keras' progress bar and logs


@tf.keras.utils.register_keras_serializable("cml_tf")
class CML(OneIteratorFit, TopK, tf.keras.Model):
    """CML / CML+F as a Keras model: ``model.fit(positive_pairs_dataset(train, batch))`` trains it.

    Args:
      n_users, n_items: table sizes.
      dim: r, the dimension of the space.
      margin: m, the hinge margin on squared distances.
      num_negatives: U, negatives sampled per positive pair.
      lambda_c: weight of the covariance regularizer.
      lambda_f: weight of the feature prior loss (CML+F).
      item_features: optional (n_items x F) scipy sparse matrix; turns on the feature prior.
      hidden, dropout: the feature MLP's hidden width and dropout rate.
      normalize_features: the MLP sees each item's feature row scaled to unit length.
      init_items_from_features: start every item with features at f(x_j) instead of at random.
      known_positives: (n_users x n_items) matrix of the training positives, never sampled as
        negatives and excluded by ``recommend``. Required to train.
      seed: seeds the initialisers, dropout and the negative sampler.
      jit_sampling: compile the negative sampling and distance computation with XLA (fused, about
        twice as fast on CPU; works on any device XLA supports).
      n_known, n_features, n_feature_entries: sizes of the data above; only ``from_config`` uses
        them, to rebuild the model before its weights are loaded.
    """

    metric = "squared_l2"  # how the export and retrieval layers compare users and items

    @property
    def jit_compile_blocker(self):
        """Why the whole ``train_step`` cannot be compiled with XLA (None: it can). The feature
        prior gathers CSR rows (``RaggedRange``) and deduplicates items (``tf.unique``): shapes
        that depend on the data, which XLA does not compile."""
        if self.prior is not None:
            return "the feature prior's sparse row gather (RaggedRange) and tf.unique"
        return None

    def __init__(self, n_users: int, n_items: int, dim: int = 100, margin: float = 0.5,
                 num_negatives: int = 20, lambda_c: float = 10.0, lambda_f: float = 1.0,
                 item_features=None, hidden: int = 256, dropout: float = 0.5,
                 normalize_features: bool = False, init_items_from_features: bool = False,
                 known_positives=None, seed: int = 0,
                 jit_sampling: bool = True, n_known: int = 0, n_features: int = 0,
                 n_feature_entries: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_positive(n_users=n_users, n_items=n_items, dim=dim, margin=margin,
                       num_negatives=num_negatives)
        check_non_negative(lambda_c=lambda_c, lambda_f=lambda_f)
        self.n_users, self.n_items, self.dim = int(n_users), int(n_items), int(dim)
        self.margin, self.num_negatives = float(margin), int(num_negatives)
        self.lambda_c, self.lambda_f = float(lambda_c), float(lambda_f)
        self.hidden, self.dropout_rate, self.seed = int(hidden), float(dropout), seed
        self.init_items_from_features = bool(init_items_from_features)
        self.normalize_features = bool(normalize_features)

        self.user_embedding = UnitBallEmbedding(n_users, dim, seed=seed, name="users")
        self.item_embedding = UnitBallEmbedding(
            n_items, dim, seed=None if seed is None else seed + 1, name="items")
        self.warp = WarpHingeLoss(margin, n_items, name="warp")
        self.covariance = CovarianceRegularizer(name="covariance")

        self.sampler = NegativeSampler.for_model(n_users, n_items, known_positives, n_known,
                                                 seed=seed, name="sampler")

        if item_features is not None:
            item_features = check_features(item_features, n_items)
            n_features, n_feature_entries = item_features.shape[1], item_features.nnz
        self.n_features, self.n_feature_entries = int(n_features), int(n_feature_entries)
        self.features = self.prior = None
        if self.n_features:
            self.features = SparseRows((n_items, self.n_features), self.n_feature_entries,
                                       name="item_features")
            self.prior = FeaturePrior(dim, self.n_features, hidden, dropout, seed=seed,
                                      normalize=self.normalize_features,
                                      name="feature_prior")
            if item_features is not None:
                self.features.assign(item_features)
                if self.init_items_from_features:
                    self._init_items_from_features(item_features)
        self._trackers = {name: tf.keras.metrics.Mean(name) for name in _LOGGED
                          if (name != "covariance_loss" or self.lambda_c)
                          and (name != "feature_loss" or self.prior is not None)}
        self.jit_sampling = bool(jit_sampling)
        self._sampling_function = None
        self.built = True  # every weight exists now; nothing depends on the input shape

    @classmethod
    def from_interactions(cls, train, use_features: bool = True, **hyperparameters) -> "CML":
        """A model sized for ``train`` (an Interactions), its positives and (if any) features."""
        features = train.item_features if use_features else None
        return cls(train.n_users, train.n_items, item_features=features,
                   known_positives=train.matrix, **hyperparameters)

    # ---- training ------------------------------------------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers.values())

    def train_step(self, data):
        if self.sampler.n_known == 0:
            raise ValueError("CML needs the training positives to sample negatives: build it "
                             "with known_positives=train.matrix or CML.from_interactions(train)")
        users, positives = data[0], data[1]
        users, positives = tf.reshape(users, [-1]), tf.reshape(positives, [-1])
        negatives, negative_distances, hardest = self._sample_negatives(users)
        hard_items = tf.gather(negatives, hardest, batch_dims=1)

        with tf.GradientTape() as tape:
            u = self.user_embedding(users)
            v_pos = self.item_embedding(positives)
            v_neg = self.item_embedding(hard_items)
            d_pos = tf.reduce_sum(tf.square(u - v_pos), axis=1)
            d_hard = tf.reduce_sum(tf.square(u - v_neg), axis=1)
            # Equal to all U distances in value; only the hardest one carries gradient.
            d_all = tf.stop_gradient(negative_distances) + tf.one_hot(
                hardest, self.num_negatives) * (d_hard - tf.stop_gradient(d_hard))[:, None]
            pair_loss, impostors, weight = self.warp(d_pos, d_all)
            metric_loss = tf.reduce_sum(pair_loss)
            total = metric_loss
            covariance_loss = tf.constant(0.0)
            if self.lambda_c:  # a Python branch: lambda_c = 0 costs nothing
                covariance_loss = self.covariance(tf.concat([u, v_pos, v_neg], axis=0))
                total += self.lambda_c * covariance_loss
            feature_loss = tf.constant(0.0)
            touched_items = tf.concat([positives, hard_items], axis=0)
            if self.prior is not None:
                # The batch's items, plus one uniformly drawn item per pair: rarely liked items
                # (often in the test set) feel the prior as often as the others, which makes
                # this a stochastic estimate of the paper's sum over all items.
                touched_items, _ = tf.unique(tf.concat([touched_items, negatives[:, 0]], 0))
                projected = self.prior(self.features(touched_items), training=True)
                feature_loss = self.prior.prior_loss(projected,
                                                     self.item_embedding(touched_items))
                total += self.lambda_f * feature_loss

        variables = self.trainable_variables
        gradients = tape.gradient(total, variables)
        optimizer_censors = self._optimizer_censors()
        self.optimizer.apply_gradients(zip(gradients, variables))
        if not optimizer_censors:
            self._censor(users, touched_items)

        # Per positive pair; the parts are weighted, so loss = metric + covariance + feature. A
        # replica can get no pairs (a last batch smaller than the replicas): its logs are 0.
        n = tf.maximum(tf.cast(tf.size(users), tf.float32), 1.0)
        logs = {"loss": total / n, "metric_loss": metric_loss / n,
                "impostor_fraction": tf.reduce_sum(
                    tf.cast(impostors, tf.float32)) / n / self.num_negatives,
                "rank_weight": tf.reduce_sum(weight) / n}
        if self.lambda_c:
            logs["covariance_loss"] = self.lambda_c * covariance_loss / n
        if self.prior is not None:
            logs["feature_loss"] = self.lambda_f * feature_loss / n
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in logs}

    def _sample_negatives(self, users):
        """U negatives per user, their squared distances (no gradient) and the hardest's column.

        The work that grows with U (U gathers of r floats per pair) runs as one fused XLA
        computation when ``jit_sampling`` is on.
        """
        if self._sampling_function is None:
            def sample(users):
                negatives, valid = self.sampler(users, self.num_negatives)
                anchor = lookup(self.user_embedding.embeddings, users)
                sampled = lookup(self.item_embedding.embeddings, negatives)
                distances = tf.reduce_sum(tf.square(anchor[:, None, :] - sampled), axis=-1)
                distances = tf.where(valid, distances, np.inf)
                return negatives, distances, tf.argmin(distances, axis=1, output_type=tf.int32)

            self._sampling_function = tf.function(sample, jit_compile=self.jit_sampling)
        return self._sampling_function(users)

    def _optimizer_censors(self) -> bool:
        """Whether the optimizer censors the rows it updates (:class:`SparseAdagrad` does, once
        told to), which spares the step a second read and write of every touched row. Under a
        distribution strategy its gradients, hence its rows, are those of all replicas."""
        if not isinstance(self.optimizer, SparseAdagrad):
            return False
        for table in (self.user_embedding, self.item_embedding):
            for shard in shards(table.embeddings):  # a sharded table's rows, shard by shard
                self.optimizer.project_rows(shard, censor)
        return True

    def _censor(self, user_rows, item_rows):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            user_rows = context.all_gather(user_rows, axis=0)
            item_rows = context.all_gather(item_rows, axis=0)
        self.user_embedding.censor_rows(user_rows)
        self.item_embedding.censor_rows(item_rows)

    def _init_items_from_features(self, item_features, batch_size: int = 4096):
        has_features = np.flatnonzero(np.diff(item_features.indptr) > 0)
        for start in range(0, len(has_features), batch_size):
            rows = has_features[start:start + batch_size]
            projected = self.prior(self.features(tf.constant(rows)), training=False)
            self.item_embedding.embeddings.scatter_update(
                tf.IndexedSlices(projected, tf.constant(rows)))

    # ---- scoring -------------------------------------------------------------------------------

    def call(self, users, training=None):
        return self.score(users)

    def score(self, users):
        """-||u_b - v_j||^2 for every user b of ``users`` (indices) and every item j: [B, J]."""
        u = lookup(self.user_embedding.embeddings, tf.reshape(users, [-1]))
        return -squared_distances(u, self.item_embedding.embeddings)

    def known_items(self, users):
        """Known positives of ``users`` as a RaggedTensor of item indices."""
        return self.sampler.known_items(users)

    def similar_items(self, items, k: int):
        """Nearest k items to each item of ``items`` (itself excluded): ``(scores, items)``."""
        check_k(k, self.n_items - 1)
        items = tf.reshape(items, [-1])
        v = lookup(self.item_embedding.embeddings, items)
        scores = mask_themselves(-squared_distances(v, self.item_embedding.embeddings), items)
        return tf.math.top_k(scores, k)

    def embed_items(self, features: tf.SparseTensor):
        """f(x) for items given by their features (CML+F): cold-start vectors in the space."""
        if self.prior is None:
            raise ValueError("this model has no feature prior (it was built without features)")
        return self.prior(features, training=False)

    @property
    def user_vectors(self) -> np.ndarray:
        return self.user_embedding.embeddings.numpy()

    @property
    def item_vectors(self) -> np.ndarray:
        return self.item_embedding.embeddings.numpy()

    def get_config(self):
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim,
                "margin": self.margin, "num_negatives": self.num_negatives,
                "lambda_c": self.lambda_c, "lambda_f": self.lambda_f, "hidden": self.hidden,
                "dropout": self.dropout_rate, "normalize_features": self.normalize_features,
                "seed": self.seed,
                "init_items_from_features": self.init_items_from_features,
                "jit_sampling": self.jit_sampling,
                "n_known": self.sampler.n_known, "n_features": self.n_features,
                "n_feature_entries": self.n_feature_entries, "name": self.name}


def squared_distances(queries, table):
    """||q_b - v_j||^2 = ||q_b||^2 - 2 q_b·v_j + ||v_j||^2, clipped at 0: [B, J]."""
    dots = tf.matmul(queries, table, transpose_b=True)
    q2 = tf.reduce_sum(tf.square(queries), axis=1, keepdims=True)
    v2 = tf.reduce_sum(tf.square(table), axis=1)
    return tf.maximum(q2 - 2.0 * dots + v2[None, :], 0.0)
