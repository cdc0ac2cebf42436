"""Shared fixtures of the export tests: one small trained CML+F model and its exports.

The model is trained for a few epochs on planted synthetic data (300 users x 240 items, 16
dimensions, tag features), so that recommendations, similar items and feature embeddings are
real. Exports are written once per session (k=20): ``brute_force``, ``partitioned`` (default,
tuned), ``partitioned_full`` (every partition searched: exact), ``scann`` (a forced tree with
tuned depth: approximate) and ``scann_default`` (what the defaults give at this size: ScaNN's
exact brute force).
"""

import pathlib

import pytest
import tensorflow as tf

from cml_tf import export
from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic
from cml_tf.models import CML
from cml_tf.serving import spec_from_model

from export_helpers import EXPORTS, K

@pytest.fixture(scope="session")
def trained():
    """(model, split, spec) of a small CML+F trained on planted synthetic data."""
    tf.keras.utils.set_random_seed(0)
    data = make_synthetic(n_users=300, n_items=240, n_clusters=6, mean_per_user=12, seed=3)
    split = split_per_user(data, seed=0)
    model = CML.from_interactions(split.train, dim=16, margin=0.5, seed=0)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    model.fit(positive_pairs_dataset(split.train, batch_size=512), epochs=4, verbose=0)
    return model, split, spec_from_model(model, split)


@pytest.fixture(scope="session")
def exports(trained, tmp_path_factory):
    """label -> (path of the version folder, export result)."""
    _, _, spec = trained
    base = tmp_path_factory.mktemp("exports")
    out = {}
    for label, options in EXPORTS.items():
        result = export.export(spec, base / label, k=K, report_users=300, report_queries=20,
                               tune_users=150, **options)
        out[label] = (pathlib.Path(result["path"]), result)
    return out
