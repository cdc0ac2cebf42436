"""Every model-zoo config (configs/citeulike_t/<model>.py) loads, names citeulike-t and trains
one short epoch through train_and_evaluate (on small synthetic data, shrunk, to stay fast)."""

import importlib.util
import json
import pathlib

import pytest

from cml_tf import train
from cml_tf.models import MODELS

REPO = pathlib.Path(__file__).resolve().parents[1]
ZOO = sorted((REPO / "configs" / "citeulike_t").glob("*.py"))


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_every_baseline_has_a_config():
    assert {p.stem for p in ZOO} >= {"bpr", "warp", "wrmf", "fm", "vbpr", "cdl"}


@pytest.mark.slow
@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_config_loads_and_runs_one_short_epoch(path, tmp_path):
    config = load(path)
    assert config.data.name == "citeulike-t"
    assert config.model.name == path.stem and config.model.name in MODELS
    text = path.read_text().lower()
    assert "tuning" in text and "validation" in text  # each says how it was tuned
    # The same config on small synthetic data, shrunk: one epoch, no export.
    config.data.name = "synthetic"
    config.data.synthetic.update(dict(n_users=300, n_items=200, n_clusters=5, seed=0))
    for key, value in (("dim", 8), ("hidden", 16), ("feature_dim", 4)):
        if key in config.model:
            config.model[key] = value
    config.train.epochs = 1
    config.train.eval_every = 1
    config.train.verbose = 0
    config.export.enabled = False
    if "viz" in config:
        config.viz.enabled = False
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["epochs"] == 1
    assert 0.0 <= metrics["test"]["recall@50"] <= 1.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["valid"]["recall@50"] > 0
