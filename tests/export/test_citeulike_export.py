"""The default ScaNN export on real data: recall@100 >= 0.98 against exact search on citeulike-t
(skips when ../shared/data/citeulike-t is absent)."""

import json

import pytest
import tensorflow as tf

from cml_tf import export
from cml_tf.data.citeulike import load_citeulike_t
from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.data.split import split_per_user
from cml_tf.models import CML

pytestmark = pytest.mark.slow


def test_default_scann_export_on_citeulike_t(citeulike_dir, tmp_path):
    split = split_per_user(load_citeulike_t(citeulike_dir), seed=0)
    tf.keras.utils.set_random_seed(0)
    model = CML.from_interactions(split.train, use_features=False, dim=100, margin=1.5)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    model.fit(positive_pairs_dataset(split.train, batch_size=8192), epochs=5, verbose=0)
    result = export.export_model(model, split, tmp_path, report_queries=20)   # the defaults
    report = json.loads((tmp_path / "1" / "assets.extra" / "index_report.json").read_text())
    assert report["index"] == "scann" and report["k"] == 100 and not report["exact"]
    assert report["n_items"] == split.train.n_items > 25_000
    assert report["sample_users"] == 1000
    assert report["recall@100"] >= 0.98 and report["recall@10"] >= 0.98, report
    assert result["report"] == report
