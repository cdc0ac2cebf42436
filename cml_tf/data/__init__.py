"""Data layer: the Interactions container, loaders, splits, synthetic data, tf.data input."""

from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions
from cml_tf.data.bookcrossing import load_bookcrossing
from cml_tf.data.citeulike import load_citeulike_t, load_citeulike_t_tag_features
from cml_tf.data.echonest import load_echonest
from cml_tf.data.features import join_item_features
from cml_tf.data.files import SplitFiles, load_interactions_file, load_split_files
from cml_tf.data.movielens import load_movielens
from cml_tf.data.registry import load
