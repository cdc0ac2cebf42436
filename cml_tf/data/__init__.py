"""Data layer: the Interactions container, loaders, splits, synthetic data, tf.data input."""

from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions
