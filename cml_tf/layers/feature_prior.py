"""Feature prior of CML+F (paper section 3.3): a dropout MLP from item features into the space."""

import scipy.sparse as sp
import tensorflow as tf

from cml_tf.layers.embedding import censor


def sparse_rows_matmul(features: tf.SparseTensor, table):
    """``features @ table`` gathering only the rows of ``table`` of the features present (once
    each): neither ``features`` nor ``table``'s gradient is densified (the gradient is an
    ``IndexedSlices`` over the present features)."""
    present, position = tf.unique(features.indices[:, 1])
    local = tf.SparseTensor(
        tf.stack([features.indices[:, 0], tf.cast(position, tf.int64)], axis=1),
        features.values,
        tf.stack([features.dense_shape[0], tf.cast(tf.size(present), tf.int64)]))
    return tf.sparse.sparse_dense_matmul(local, tf.gather(table, present))


@tf.keras.utils.register_keras_serializable("cml_tf")
class FeaturePrior(tf.keras.layers.Layer):
    """f(x) = censor(W2 · dropout(relu(W1ᵀ x + b1)) + b2), mapping sparse features x ∈ R^F into
    the unit ball of R^r, and the prior loss L_f = sum_j ||f(x_j) - v_j||^2 (:meth:`prior_loss`).

    The input is a ``tf.SparseTensor`` [batch, F]; the first layer is a sparse x dense product
    with only the rows of W1 of the features present in the batch, so neither the features nor
    W1's gradient is ever densified: the gradient of W1 is an ``IndexedSlices`` over the
    features present. ``censor`` (y / max(||y||, 1)) keeps f(x) where the item
    vectors can be.

    ``normalize=True`` feeds x / ||x|| instead of x (rows scaled to unit length inside the layer,
    so ``embed_items`` and the exported signature apply it too): an article with 40 tags then
    starts the MLP at the same scale as one with 3.

    Dropout masks come from a ``tf.random.Generator`` seeded with ``seed``: its state is a
    variable of the layer, so a checkpoint holds it and a resumed run draws the masks the
    uninterrupted run would have drawn (Keras' ``Dropout`` uses a stateful op whose position in
    its stream lives in the process and restarts with it).
    """

    def __init__(self, dim: int, n_features: int, hidden: int = 256, dropout: float = 0.5,
                 seed=None, normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        if dim < 1 or n_features < 1 or hidden < 1:
            raise ValueError(f"dim, n_features and hidden must be >= 1, got {dim}, {n_features}, "
                             f"{hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim, self.n_features, self.hidden = int(dim), int(n_features), int(hidden)
        self.dropout_rate, self.seed, self.normalize = float(dropout), seed, bool(normalize)
        glorot = tf.keras.initializers.GlorotUniform
        self.w1 = self.add_weight(name="w1", shape=(self.n_features, self.hidden),
                                  initializer=glorot(seed))
        self.b1 = self.add_weight(name="b1", shape=(self.hidden,), initializer="zeros")
        self._dropout_generator = (tf.random.Generator.from_seed(seed) if seed is not None
                                   else tf.random.Generator.from_non_deterministic_state())
        self.output_layer = tf.keras.layers.Dense(
            self.dim, kernel_initializer=glorot(None if seed is None else seed + 1))
        self.output_layer.build((None, self.hidden))
        self.built = True

    def hidden_activations(self, features: tf.SparseTensor, training=None):
        """dropout(relu(W1ᵀ x + b1)), x scaled to unit length first when ``normalize``."""
        if self.normalize:
            rows = features.indices[:, 0]
            squares = tf.math.unsorted_segment_sum(tf.square(features.values), rows,
                                                   features.dense_shape[0])
            features = features.with_values(
                features.values * tf.math.rsqrt(tf.maximum(tf.gather(squares, rows), 1e-12)))
        hidden = tf.nn.relu(sparse_rows_matmul(features, self.w1) + self.b1)
        if training is None or not self.dropout_rate:
            return hidden
        return tf.__internal__.smart_cond.smart_cond(
            training, lambda: tf.nn.experimental.general_dropout(
                hidden, self.dropout_rate, uniform_sampler=self._dropout_generator.uniform),
            lambda: hidden)

    def call(self, features: tf.SparseTensor, training=None):
        return censor(self.output_layer(self.hidden_activations(features, training)))

    @staticmethod
    def prior_loss(projected, vectors):
        """L_f = sum_j ||f(x_j) - v_j||^2 over the rows given."""
        return tf.reduce_sum(tf.square(projected - vectors))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "n_features": self.n_features,
                "hidden": self.hidden, "dropout": self.dropout_rate, "seed": self.seed,
                "normalize": self.normalize}


@tf.keras.utils.register_keras_serializable("cml_tf")
class SparseRows(tf.keras.layers.Layer):
    """A CSR matrix kept as three non-trainable weights, whose rows gather into a SparseTensor.

    This is how a model holds an items x features table on device without ever densifying it.
    Built from ``shape`` and ``nnz`` (so ``from_config`` can rebuild it before weights load);
    :meth:`assign` fills it from a scipy matrix.
    """

    def __init__(self, shape, nnz: int, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.matrix_shape = tuple(int(s) for s in shape)
        self.nnz = int(nnz)
        self.indptr = self.add_weight(name="indptr", shape=(self.matrix_shape[0] + 1,),
                                      dtype=tf.int64, initializer="zeros", trainable=False)
        self.indices = self.add_weight(name="indices", shape=(self.nnz,), dtype=tf.int64,
                                       initializer="zeros", trainable=False)
        self.values = self.add_weight(name="values", shape=(self.nnz,), dtype=tf.float32,
                                      initializer="zeros", trainable=False)

    @classmethod
    def from_matrix(cls, matrix, **kwargs) -> "SparseRows":
        matrix = sp.csr_matrix(matrix)
        layer = cls(matrix.shape, matrix.nnz, **kwargs)
        layer.assign(matrix)
        return layer

    def assign(self, matrix):
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        if matrix.shape != self.matrix_shape or matrix.nnz != self.nnz:
            raise ValueError(f"matrix {matrix.shape} with {matrix.nnz} entries does not fit "
                             f"{self.matrix_shape} with {self.nnz}")
        self.indptr.assign(matrix.indptr.astype("int64"))
        self.indices.assign(matrix.indices.astype("int64"))
        self.values.assign(matrix.data.astype("float32"))

    def call(self, rows):
        """Rows ``rows`` (int vector) as a SparseTensor [len(rows), n_columns]."""
        rows = tf.cast(tf.reshape(rows, [-1]), tf.int64)
        starts = tf.gather(self.indptr, rows)
        positions = tf.ragged.range(starts, tf.gather(self.indptr, rows + 1))
        flat = positions.flat_values
        indices = tf.stack([positions.value_rowids(), tf.gather(self.indices, flat)], axis=1)
        return tf.SparseTensor(indices, tf.gather(self.values, flat),
                               tf.stack([tf.size(rows, out_type=tf.int64),
                                         tf.constant(self.matrix_shape[1], tf.int64)]))

    def get_config(self):
        return {**super().get_config(), "shape": self.matrix_shape, "nnz": self.nnz}
