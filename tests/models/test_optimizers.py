"""SparseAdagrad: Keras' AdaGrad numbers from a cheaper sparse update, and row projections."""

import numpy as np
import pytest
import tensorflow as tf

from cml_tf.layers.embedding import censor
from cml_tf.optimizers import SparseAdagrad
from cml_tf.train import make_optimizer


def sparse_steps(optimizer, steps=4, seed=0):
    """Runs ``steps`` updates of a (50 x 6) table from IndexedSlices with repeated rows."""
    rng = np.random.default_rng(seed)
    table = tf.Variable(rng.normal(size=(50, 6)).astype(np.float32))
    for _ in range(steps):
        rows = rng.integers(0, 20, 30)  # rows 20-49 are never touched; many rows repeat
        values = rng.normal(size=(30, 6)).astype(np.float32)
        gradient = tf.IndexedSlices(tf.constant(values), tf.constant(rows, tf.int32),
                                    tf.constant([50, 6]))
        optimizer.apply_gradients([(gradient, table)])
    return table.numpy()


def test_sparse_update_equals_keras_adagrad_with_repeated_rows():
    ours = sparse_steps(SparseAdagrad(0.3))
    keras = sparse_steps(tf.keras.optimizers.Adagrad(0.3))
    np.testing.assert_array_equal(ours, keras)


def test_sparse_update_equals_the_adagrad_formula():
    table = tf.Variable([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    optimizer = SparseAdagrad(0.5, initial_accumulator_value=0.1, epsilon=1e-7)
    gradient = tf.IndexedSlices(tf.constant([[1.0, -2.0], [0.5, 0.5], [2.0, 1.0]]),
                                tf.constant([2, 0, 2]), tf.constant([3, 2]))
    optimizer.apply_gradients([(gradient, table)])
    summed = {0: np.array([0.5, 0.5]), 2: np.array([3.0, -1.0])}  # row 2 occurs twice
    expected = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    for row, g in summed.items():
        expected[row] -= 0.5 * g / np.sqrt(0.1 + g ** 2 + 1e-7)
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-6)


def test_dense_gradients_follow_keras_adagrad():
    values = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    results = []
    for optimizer in (SparseAdagrad(0.2), tf.keras.optimizers.Adagrad(0.2)):
        variable = tf.Variable(np.ones((4, 3), np.float32))
        for _ in range(3):
            optimizer.apply_gradients([(tf.constant(values), variable)])
        results.append(variable.numpy())
    np.testing.assert_array_equal(*results)


def test_projection_applies_to_updated_rows_only():
    table = tf.Variable(np.full((6, 2), 3.0, np.float32))  # every row outside the unit ball
    optimizer = SparseAdagrad(0.1)
    optimizer.project_rows(table, censor)
    gradient = tf.IndexedSlices(tf.ones([3, 2]), tf.constant([1, 4, 1]), tf.constant([6, 2]))
    optimizer.apply_gradients([(gradient, table)])
    norms = np.linalg.norm(table.numpy(), axis=1)
    np.testing.assert_allclose(norms[[1, 4]], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(table.numpy()[[0, 2, 3, 5]], 3.0)  # untouched, bit-identical


def test_projection_applies_to_every_row_on_a_dense_update():
    table = tf.Variable(np.full((5, 2), 3.0, np.float32))
    optimizer = SparseAdagrad(0.1)
    optimizer.project_rows(table, censor)
    optimizer.apply_gradients([(tf.ones([5, 2]), table)])
    np.testing.assert_allclose(np.linalg.norm(table.numpy(), axis=1), 1.0, rtol=1e-6)


def test_round_trips_through_keras_serialization():
    optimizer = SparseAdagrad(0.25, initial_accumulator_value=0.2, epsilon=1e-6)
    copy = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(optimizer))
    assert isinstance(copy, SparseAdagrad)
    config = copy.get_config()
    assert config["learning_rate"] == pytest.approx(0.25)
    assert config["initial_accumulator_value"] == pytest.approx(0.2)
    assert config["epsilon"] == pytest.approx(1e-6)


def test_the_train_command_uses_it_for_adagrad():
    class TrainConfig:
        optimizer, learning_rate = "AdaGrad", 0.1
    assert isinstance(make_optimizer(TrainConfig), SparseAdagrad)
    TrainConfig.optimizer = "adam"
    assert isinstance(make_optimizer(TrainConfig), tf.keras.optimizers.Adam)
