"""The export at the end of training and export/export.py on a trained workdir."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import REPO

from cml_tf import export, train
from cml_tf.config import get_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    config = get_config()
    config.data.synthetic.update(n_users=300, n_items=200, n_clusters=5, mean_per_user=12)
    config.model.dim = 16
    config.train.update({"epochs": 3, "batch_size": 512, "eval_every": 1, "verbose": 0})
    # Three epochs on this small data stay below the popularity baseline, which the train
    # command refuses to export unless asked.
    config.export.update({"k": 10, "report_users": 100, "report_queries": 10,
                          "allow_untrained": True})
    path = tmp_path_factory.mktemp("run") / "workdir"
    metrics = train.train_and_evaluate(config, str(path))
    return path, metrics


def serve(path, users):
    model = tf.saved_model.load(str(path))
    out = model.signatures["serving_default"](user_id=tf.constant(users))
    return out["item_ids"].numpy().tolist(), out["scores"].numpy()


def test_training_exports_into_the_workdir(workdir):
    path, metrics = workdir
    summary = metrics["export"]
    assert summary["path"] == str(path / "saved_model" / "1") and summary["version"] == 1
    assert summary["index"] == "scann" and summary["k"] == 10
    assert summary["recall@10"] == 1.0            # 200 items: ScaNN's exact brute force
    written = json.loads((path / "metrics.json").read_text())["export"]
    assert written["size_bytes"] == summary["size_bytes"] > 0
    report = json.loads((path / "saved_model" / "1" / "assets.extra" /
                         "index_report.json").read_text())
    assert report["index_parameters"]["brute_force"] and report["n_items"] == 200


def test_export_script_rebuilds_the_model_from_the_workdir(workdir):
    path, _ = workdir
    command = [sys.executable, str(REPO / "export" / "export.py"), f"--workdir={path}",
               "--index=brute_force", "--report_users=50", "--report_queries=5"]
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"exported {path / 'saved_model' / '2'}" in done.stdout
    assert "recall@10 1.0000" in done.stdout
    # Same weights as the export written by training (both indexes are exact here).
    users = [f"u{i}" for i in range(0, 300, 7)] + ["nobody"]
    ids_1, scores_1 = serve(path / "saved_model" / "1", users)
    ids_2, scores_2 = serve(path / "saved_model" / "2", users)
    assert ids_1 == ids_2
    np.testing.assert_allclose(scores_1, scores_2, atol=1e-5)
    # An existing version is refused without --overwrite, replaced with it.
    refused = subprocess.run(command + ["--version=1"], capture_output=True, text=True,
                             timeout=600, env=env, check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert sorted(p.name for p in (path / "saved_model").iterdir()) == ["1", "2"]


def test_restore_model_picks_the_best_weights(workdir):
    path, _ = workdir
    model, split, config = export.restore_model(path)
    assert config.export.k == 10 and split.train.n_items == 200
    best, _, _ = export.restore_model(path, checkpoint="best")
    latest, _, _ = export.restore_model(path, checkpoint="latest")
    np.testing.assert_array_equal(model.user_vectors, best.user_vectors)
    assert latest.user_vectors.shape == model.user_vectors.shape
    with pytest.raises(FileNotFoundError, match="config.json"):
        export.restore_model(path / "saved_model")
