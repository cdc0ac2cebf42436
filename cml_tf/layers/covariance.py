"""Covariance (DeCov) regularizer of Cogswell et al., as used by CML (paper section 3.4)."""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable("cml_tf")
class CovarianceRegularizer(tf.keras.layers.Layer):
    """For the N vectors y^n of a batch (users and items together), with mean mu:

        C_ij = 1/N sum_n (y^n_i - mu_i)(y^n_j - mu_j)
        L_c  = (||C||_F^2 - ||diag(C)||_2^2) / N  =  sum_{i != j} C_ij^2 / N

    i.e. the sum of squared off-diagonal covariances (never negative: the paper's ||C||_f is read
    as the squared Frobenius norm; the original code summed the signed entries, which can go
    negative). Call with vectors [N, r]; returns the scalar L_c.
    """

    def call(self, vectors):
        vectors = tf.convert_to_tensor(vectors)
        n = tf.maximum(tf.cast(tf.shape(vectors)[0], vectors.dtype), 1.0)  # 0 rows: L_c = 0
        centered = vectors - tf.reduce_mean(vectors, axis=0, keepdims=True)
        covariance = tf.matmul(centered, centered, transpose_a=True) / n
        off_diagonal = tf.reduce_sum(tf.square(covariance)) - tf.reduce_sum(
            tf.square(tf.linalg.diag_part(covariance)))
        return off_diagonal / n
