"""AdaGrad for embedding tables: each touched row is read and written once per step.

For a gradient g on the rows R of a table y, with accumulator a (Duchi et al., 2011):

    a_R <- a_R + g_R^2
    y_R <- P(y_R - lr * g_R / sqrt(a_R + eps))

P is the identity, or a row-wise projection registered with :meth:`SparseAdagrad.project_rows`
(CML keeps its rows in the unit ball this way), which then costs no extra pass over the rows.

``apply_gradients`` first sums the gradients of rows that occur more than once, so R holds each
row once. Keras' ``Adagrad`` computes the same numbers with two scatter-adds and a gather; here it
is two gathers and two scatter-updates, which copy rows instead of adding them in place and cost
about a third as much on CPU: a batch of 8,192 CML pairs touches 24k rows. The sum over repeated
rows is compiled with XLA, which on CPU takes half the time of TensorFlow's segment-sum kernel;
its input is padded to one of a few sizes, so XLA compiles a handful of programs, not one per
step, when the number of touched rows varies (CML+F). Dense gradients get Keras' dense update,
and P then applies to every row.

Under ``tf.distribute.ParameterServerStrategy`` the workers update the tables on the parameter
servers asynchronously, often the same rows at once (popular items), and a gather followed by a
scatter-update keeps only the last writer's update of a row: in a two-worker test on a small
catalogue, validation recall after 5 epochs fell from 0.63 to 0.46. There the update is
Keras' (scatter-adds, which add up concurrent updates), followed by P applied on the parameter
server that holds the rows, so the rows do not travel to the worker and back for it.
"""

import math

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

    def _deduplicate_sparse_grad(self, grads):
        return [_sum_repeated_rows(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]

    def update_step(self, gradient, variable):
        projection = self._row_projections.get(self._var_key(variable))
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable)
            if projection is not None:
                variable.assign(projection(variable))
            return
        rows = gradient.indices
        if _written_concurrently():
            super().update_step(gradient, variable)
            if projection is not None:
                with tf.device(variable.device):
                    variable.scatter_update(tf.IndexedSlices(
                        projection(tf.gather(variable, rows)), rows))
            return
        lr = tf.cast(self.learning_rate, variable.dtype)
        accumulator = self._accumulators[self._index_dict[self._var_key(variable)]]
        accumulated = tf.gather(accumulator, rows) + tf.square(gradient.values)
        updated = tf.gather(variable, rows) - lr * gradient.values / tf.sqrt(
            accumulated + self.epsilon)
        if projection is not None:
            updated = projection(updated)
        accumulator.scatter_update(tf.IndexedSlices(accumulated, rows))
        variable.scatter_update(tf.IndexedSlices(updated, rows))


def _written_concurrently() -> bool:
    """Whether other processes write the variables at the same time (parameter servers)."""
    return isinstance(tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy)


def _sum_repeated_rows(gradient: tf.IndexedSlices) -> tf.IndexedSlices:
    """The same gradient with each row once, its values summed (Keras' deduplication)."""
    rows, occurrence_row = tf.unique(gradient.indices)
    n = tf.shape(occurrence_row)[0]
    log2_n = tf.math.log(tf.cast(tf.maximum(n, 1), tf.float32)) / math.log(2.0)
    step = tf.bitwise.left_shift(1, tf.maximum(0, tf.cast(log2_n, tf.int32) - 3))
    extra = (n + step - 1) // step * step - n  # pad to a multiple of ~n/8: at most 1/8 more
    values = tf.pad(gradient.values, [[0, extra]] + [[0, 0]] * (gradient.values.shape.rank - 1))
    summed = _segment_sum(values, tf.pad(occurrence_row, [[0, extra]]))  # zeros into row 0
    return tf.IndexedSlices(summed[:tf.size(rows)], rows, gradient.dense_shape)


@tf.function(jit_compile=True, reduce_retracing=True)
def _segment_sum(values, segments):
    return tf.math.unsorted_segment_sum(values, segments, tf.shape(values)[0])
