"""Data layer: the Interactions container, loaders, splits, synthetic data, tf.data input."""

from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions
from cml_tf.data.bookcrossing import load_bookcrossing
from cml_tf.data.citeulike import load_citeulike_t, load_citeulike_t_tag_features
from cml_tf.data.echonest import load_echonest
from cml_tf.data.features import join_item_features
from cml_tf.data.files import load_interactions_file, load_split_files
from cml_tf.data.movielens import load_movielens
from cml_tf.data.registry import load
from cml_tf.data.split import Split, split_per_user
from cml_tf.data.synthetic import make_figure3, make_synthetic


def __getattr__(name):
    # The tf.data pipeline imports TensorFlow; load it only when asked for.
    if name in ("positive_pairs_dataset", "positive_keys"):
        from cml_tf.data import pipeline  # pylint: disable=import-outside-toplevel
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
