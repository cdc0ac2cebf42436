"""AdaGrad for embedding tables: each touched row is read and written once per step.

For a gradient g on the rows R of a table y, with accumulator a (Duchi et al., 2011):

    a_R <- a_R + g_R^2
    y_R <- P(y_R - lr * g_R / sqrt(a_R + eps))

``apply_gradients`` first sums the gradients of rows that occur more than once, so R holds each
row once. Keras' ``Adagrad`` computes the same numbers with two scatter-adds and a gather; here it
is two gathers and two scatter-updates, which copy rows instead of adding them in place and cost
about a third as much on CPU: a batch of 8,192 CML pairs touches 24k rows. P is the identity,
or a row-wise projection registered with :meth:`SparseAdagrad.project_rows` (CML keeps its rows
in the unit ball this way), which then costs no extra pass over the rows. Dense gradients get
Keras' dense update, and P applies to every row.
"""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable("cml_tf")
class SparseAdagrad(tf.keras.optimizers.Adagrad):
    """``tf.keras.optimizers.Adagrad`` with a faster sparse update and optional row projections.

    Same arguments, slots and results as Keras' Adagrad (the tests check them equal to the bit),
    so checkpoints of either load into the other.
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 name="SparseAdagrad", **kwargs):
        super().__init__(learning_rate=learning_rate,
                         initial_accumulator_value=initial_accumulator_value, epsilon=epsilon,
                         name=name, **kwargs)
        self._row_projections = {}

    def project_rows(self, variable, projection):
        """After every update of ``variable``, its updated rows become ``projection(rows)``.

        ``projection`` maps a [rows, ...] tensor to one of the same shape, row by row (e.g.
        :func:`cml_tf.layers.embedding.censor`). Registering again replaces the projection.
        """
        self._row_projections[self._var_key(variable)] = projection

    def update_step(self, gradient, variable):
        projection = self._row_projections.get(self._var_key(variable))
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable)
            if projection is not None:
                variable.assign(projection(variable))
            return
        lr = tf.cast(self.learning_rate, variable.dtype)
        accumulator = self._accumulators[self._index_dict[self._var_key(variable)]]
        rows = gradient.indices
        accumulated = tf.gather(accumulator, rows) + tf.square(gradient.values)
        updated = tf.gather(variable, rows) - lr * gradient.values / tf.sqrt(
            accumulated + self.epsilon)
        if projection is not None:
            updated = projection(updated)
        accumulator.scatter_update(tf.IndexedSlices(accumulated, rows))
        variable.scatter_update(tf.IndexedSlices(updated, rows))
