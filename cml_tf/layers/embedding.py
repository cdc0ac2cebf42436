"""Embedding table whose rows live inside the unit ball (paper section 3.4)."""

import math

import tensorflow as tf

ShardedVariable = tf.__internal__.distribute.ShardedVariable


class UnitBallInitializer(tf.keras.initializers.Initializer):
    """Rows drawn from N(0, 1/r) (standard deviation 1/sqrt(r)), then censored into the ball."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None, **kwargs):
        dtype = dtype or tf.float32
        rows = tf.random.stateless_normal(shape, seed=[self.seed or 0, 1],
                                          stddev=1.0 / math.sqrt(shape[-1]), dtype=dtype)
        return censor(rows)

    def get_config(self):
        return {"seed": self.seed}


def lookup(table, indices) -> tf.Tensor:
    """Rows ``table[indices]`` (any shape of indices) of a variable or of a table sharded over
    parameter servers (a ``ShardedVariable``, see :mod:`cml_tf.distribute`): each shard is read
    at its own rows only, and its gradient is an ``IndexedSlices`` of those rows.

    ``tf.gather`` on a ``ShardedVariable`` reads the right rows but returns them grouped by
    shard, not in the order of ``indices`` (TensorFlow 2.20's ``ShardedVariable.sparse_read``);
    ``tf.nn.embedding_lookup`` puts them back in order.
    """
    if isinstance(table, ShardedVariable):
        return tf.nn.embedding_lookup(table, indices)
    return tf.gather(table, indices)


def shards(table) -> list:
    """The variables that hold ``table``: its shards in row order, or the table itself."""
    return list(table.variables) if isinstance(table, ShardedVariable) else [table]


def censor(rows: tf.Tensor) -> tf.Tensor:
    """y / max(||y||, 1) for every row: rows outside the unit ball are projected onto it."""
    norms = tf.norm(rows, axis=-1, keepdims=True)
    return rows / tf.maximum(norms, 1.0)


@tf.keras.utils.register_keras_serializable("cml_tf")
class UnitBallEmbedding(tf.keras.layers.Layer):
    """A (count x dim) table of vectors with ||y|| <= 1, looked up by index.

    Initialised from N(0, 1/dim) and censored. Training changes rows by gradient steps that can
    leave the ball; :meth:`censor_rows` projects back exactly the rows a step touched, so the cost
    of keeping the constraint does not grow with the size of the table.
    """

    def __init__(self, count: int, dim: int, seed=None, **kwargs):
        super().__init__(**kwargs)
        if count < 1 or dim < 1:
            raise ValueError(f"an embedding needs count >= 1 and dim >= 1, got {count} x {dim}")
        self.count, self.dim, self.seed = int(count), int(dim), seed
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.count, self.dim),
            initializer=UnitBallInitializer(seed), trainable=True)

    def call(self, indices):
        return lookup(self.embeddings, indices)

    def censor_rows(self, indices: tf.Tensor):
        """Projects the given rows back into the unit ball, in place.

        Duplicate indices are fine: every copy of a row computes the same censored value, so the
        scatter's write order does not matter (and no ``tf.unique``, which XLA cannot compile).
        """
        indices = tf.reshape(indices, [-1])
        rows = lookup(self.embeddings, indices)
        return self.embeddings.scatter_update(tf.IndexedSlices(censor(rows), indices))

    def get_config(self):
        return {**super().get_config(), "count": self.count, "dim": self.dim, "seed": self.seed}
