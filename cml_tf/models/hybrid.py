"""Hybrid dot-product baselines with item features (paper section 4.2.1): FM, VBPR-MLP, CDL-MLP.

All three score ``s(i, j) = u_i . v_j`` (the item bias rides as the last coordinate, as in
:mod:`cml_tf.models.mf`) and differ in how the item vector v_j is made from a free part and the
item's sparse features x_j (a bag of tags; never densified: the features live in a
:class:`~cml_tf.layers.feature_prior.SparseRows` table and every product with them gathers only
the weight rows of the features present, so gradients are ``IndexedSlices``):

    FM        v_j = w_j e_j + sum_f x~_jf e_f        (item-identity and feature factors, LightFM
                                                     style: x~ = [1, x_j] / (1 + sum_f x_jf))
    VBPR-MLP  v_j = [gamma_j ; g(x_j)]               (free factors beside feature factors; user
                                                     vectors [gamma_u ; theta_u])
    CDL-MLP   v_j = eps_j + g(x_j)                   (a free offset from the feature vector)

where g is the paper's feature MLP (256 ReLU hidden units, dropout 0.5: the network of CML+F's
:class:`~cml_tf.layers.feature_prior.FeaturePrior`, :class:`FeatureMLP` below, with an unbounded
output since dot-product spaces have no ball). They train with the shared sampler and WARP (the
paper trains every baseline with WARP) or BPR loss. ``embed_items(features)`` gives a cold-start
item's vector from its features alone (the free parts at 0), what the export's ``embed_items``
signature serves.
"""

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.layers.feature_prior import FeaturePrior, SparseRows, sparse_rows_matmul
from cml_tf.models.mf import DotProductModel, FactorInitializer
from cml_tf.models.ranking import check_features


@tf.keras.utils.register_keras_serializable("cml_tf")
class FeatureMLP(FeaturePrior):
    """g(x) = W2 · dropout(relu(W1ᵀ x + b1)) + b2: CML+F's feature network without the final
    projection into the unit ball (dot-product models have no ball). Same weights, same sparse
    first layer (:meth:`FeaturePrior.hidden_activations`)."""

    def call(self, features: tf.SparseTensor, training=None):
        return self.output_layer(self.hidden_activations(features, training))


class FeatureModel(DotProductModel):
    """A dot-product model whose items have sparse features (see the module doc).

    Args (besides :class:`~cml_tf.models.mf.DotProductModel`'s):
      item_features: (n_items x F) scipy sparse matrix (required to build from data).
      n_features, n_feature_entries: its size; only ``from_config`` uses them.
    """

    jit_compatible = False  # the sparse feature products do not compile with XLA

    def __init__(self, n_users: int, n_items: int, item_features=None, n_features: int = 0,
                 n_feature_entries: int = 0, **kwargs):
        super().__init__(n_users, n_items, **kwargs)
        if item_features is not None:
            item_features = check_features(item_features, n_items)
            n_features, n_feature_entries = item_features.shape[1], item_features.nnz
        if not n_features:
            raise ValueError(f"{type(self).__name__} needs item features (data.use_features=True "
                             "and a data set with features)")
        self.n_features, self.n_feature_entries = int(n_features), int(n_feature_entries)
        self.features = SparseRows((n_items, self.n_features), self.n_feature_entries,
                                   name="item_features")
        self._item_features = item_features  # assigned by the subclass (it may transform them)

    @classmethod
    def from_interactions(cls, train, use_features: bool = True, **hyperparameters):
        """A model sized for ``train`` (an Interactions), its positives and item features."""
        if not use_features or train.item_features is None:
            raise ValueError(f"{cls.__name__} needs item features: load the data with "
                             "data.use_features=True")
        return cls(train.n_users, train.n_items, known_positives=train.matrix,
                   item_features=train.item_features, **hyperparameters)

    def sampling_vectors(self, users, negatives):
        # Each distinct sampled item is embedded once (at most min(N U, J) feature products).
        distinct, position = tf.unique(tf.reshape(negatives, [-1]))
        vectors = tf.gather(self.item_vectors_for(distinct, training=False), position)
        shape = tf.concat([tf.shape(negatives), tf.shape(vectors)[-1:]], 0)
        return self.user_vectors_for(users, training=False), tf.reshape(vectors, shape)

    def embed_items(self, features: tf.SparseTensor):
        """Vectors of cold-start items from their features alone ([B, F] SparseTensor)."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features,
                "n_feature_entries": self.n_feature_entries}


@tf.keras.utils.register_keras_serializable("cml_tf")
class FM(FeatureModel):
    """Factorisation machine restricted to (user, item) and (user, item feature) interactions
    (Rendle; LightFM's hybrid model): ``v_j = w_j e_j + sum_f x~_jf e_f``, biases likewise.

    Args (besides :class:`FeatureModel`'s):
      normalize: weight the item identity and its features by ``1 / (1 + sum_f x_jf)`` (LightFM's
        default normalisation); otherwise identity weight 1 and raw feature values.
    """

    def __init__(self, n_users: int, n_items: int, normalize: bool = True, **kwargs):
        super().__init__(n_users, n_items, **kwargs)
        self.normalize = bool(normalize)
        width = self.dim + int(self.use_bias)
        self.item_embedding = tf.keras.layers.Embedding(
            self.n_items, width, name="items", embeddings_initializer=self._initializer(1))
        self.item_embedding.build((None,))
        self.feature_embedding = tf.keras.layers.Embedding(
            self.n_features, width, name="feature_factors",
            embeddings_initializer=self._initializer(2))
        self.feature_embedding.build((None,))
        self.identity_weight = self.add_weight(
            name="identity_weight", shape=(self.n_items,), trainable=False, initializer="ones")
        if self._item_features is not None:
            features = self._item_features
            weight = np.ones(n_items, np.float32)
            if self.normalize:
                weight = (1.0 / (1.0 + np.asarray(features.sum(axis=1)).ravel())).astype(
                    np.float32)
                features = sp.diags(weight) @ features
            self.features.assign(sp.csr_matrix(features, dtype=np.float32))
            self.identity_weight.assign(weight)
        self._item_features = None
        self._init_trackers(self._names())
        self.built = True

    def _initializer(self, offset):
        return FactorInitializer(self.dim, self.init_scale,
                                 None if self.seed is None else self.seed + offset)

    def item_vectors_for(self, items, training=False):
        items = tf.reshape(items, [-1])
        identity = self.item_embedding(items) * tf.gather(self.identity_weight, items)[:, None]
        return identity + sparse_rows_matmul(self.features(items),
                                             self.feature_embedding.embeddings)

    def embed_items(self, features: tf.SparseTensor):
        features = tf.sparse.reorder(tf.cast(features, tf.float32))
        if self.normalize:
            total = tf.sparse.reduce_sum(features, axis=1)
            scale = tf.math.divide_no_nan(1.0, total)
            features = features.with_values(
                features.values * tf.gather(scale, features.indices[:, 0]))
        return sparse_rows_matmul(features, self.feature_embedding.embeddings)

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


class _MLPItems(FeatureModel):
    """Shared by VBPR-MLP and CDL-MLP: the feature MLP g and a free item table."""

    def __init__(self, n_users: int, n_items: int, hidden: int = 256, dropout: float = 0.5,
                 **kwargs):
        super().__init__(n_users, n_items, **kwargs)
        self.hidden, self.dropout_rate = int(hidden), float(dropout)
        self.mlp = FeatureMLP(self.mlp_dim + int(self.use_bias), self.n_features, hidden,
                              dropout, seed=self.seed, name="feature_mlp")
        self.free_items = tf.keras.layers.Embedding(
            self.n_items, self.free_dim + int(self.use_bias), name="free_items",
            embeddings_initializer=tf.keras.initializers.RandomNormal(
                stddev=self.init_scale, seed=None if self.seed is None else self.seed + 1))
        self.free_items.build((None,))
        if self._item_features is not None:
            self.features.assign(self._item_features)
        self._item_features = None
        self._init_trackers(self._names())
        self.built = True

    mlp_dim = free_dim = None  # set by the subclasses

    def l2_rows(self, batch):
        """lambda_u on the user rows, lambda_v on the free item rows of the batch."""
        free = self.free_items(tf.concat([batch.positives, batch.hard_items], 0))
        return (self.lambda_u * tf.reduce_sum(tf.square(batch.u))
                + self.lambda_v * tf.reduce_sum(tf.square(free)))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "dropout": self.dropout_rate}


@tf.keras.utils.register_keras_serializable("cml_tf")
class VBPRMLP(_MLPItems):
    """VBPR (He & McAuley) with the linear visual projection replaced by the feature MLP:
    ``s(i, j) = gamma_u . gamma_j + theta_u . g(x_j)[:r_f] + b_j + g(x_j)[r_f]`` -- free factors
    beside feature factors (``feature_dim`` = r_f of the ``dim`` factors), and a free item bias
    beside a feature bias (VBPR's beta'), with ``use_bias``.

    Args (besides :class:`FeatureModel`'s): ``feature_dim`` (default dim // 2), ``hidden``,
    ``dropout``.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 100, feature_dim: int = 0,
                 **kwargs):
        self.mlp_dim = int(feature_dim) or int(dim) // 2
        if not 0 < self.mlp_dim < dim:
            raise ValueError(f"feature_dim must be in (0, dim={dim}), got {feature_dim}")
        self.free_dim = int(dim) - self.mlp_dim
        super().__init__(n_users, n_items, dim=dim, **kwargs)

    def _assemble(self, free, feature):
        parts = [free[:, :self.free_dim], feature[:, :self.mlp_dim]]
        if self.use_bias:
            parts.append(free[:, self.free_dim:] + feature[:, self.mlp_dim:])
        return tf.concat(parts, axis=1)

    def item_vectors_for(self, items, training=False):
        items = tf.reshape(items, [-1])
        return self._assemble(self.free_items(items),
                              self.mlp(self.features(items), training=training))

    def embed_items(self, features: tf.SparseTensor):
        feature = self.mlp(tf.cast(features, tf.float32), training=False)
        return self._assemble(tf.zeros([tf.shape(feature)[0], self.free_dim + int(self.use_bias)]),
                              feature)

    def get_config(self):
        return {**super().get_config(), "feature_dim": self.mlp_dim}


@tf.keras.utils.register_keras_serializable("cml_tf")
class CDLMLP(_MLPItems):
    """CDL (Wang et al.) with the denoising autoencoder replaced by the feature MLP: the item
    vector is the feature vector plus a free offset, ``v_j = g(x_j) + eps_j``; ``lambda_v``
    keeps the offsets small (CDL's ``lambda_v ||v_j - theta_j||^2``).

    Args (besides :class:`FeatureModel`'s): ``hidden``, ``dropout``.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 100, **kwargs):
        self.mlp_dim = self.free_dim = int(dim)
        super().__init__(n_users, n_items, dim=dim, **kwargs)

    def item_vectors_for(self, items, training=False):
        items = tf.reshape(items, [-1])
        return self.free_items(items) + self.mlp(self.features(items), training=training)

    def embed_items(self, features: tf.SparseTensor):
        return self.mlp(tf.cast(features, tf.float32), training=False)
