"""configs/synthetic_echonest.py, scaled down, through the command line: the code path of the
EchoNest-size benchmark (benchmarks/scale.py) on 0.5% of its users and items."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cml_tf.data.from_config import load_data
from cml_tf.data.synthetic import make_synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/synthetic_echonest.py"
SCALE = 0.005


def config():
    import importlib.util  # pylint: disable=import-outside-toplevel
    spec = importlib.util.spec_from_file_location("synthetic_echonest", REPO / CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_config_has_echonest_shape_and_the_default_run():
    cfg = config()
    synthetic = cfg.data.synthetic
    assert (synthetic.n_users, synthetic.n_items) == (766_882, 260_417)
    assert synthetic.scale == 1.0 and not synthetic.with_features and not cfg.data.use_features
    assert (cfg.train.epochs, cfg.train.eval_every) == (10, 2)
    assert 0 < cfg.train.valid_users < synthetic.n_users  # validation samples users


def test_scaled_data_keeps_the_long_tail_and_the_popular_head():
    # At 5% the 100 clusters hold 130 songs each, not 2,604: more of a user's 10.9 draws merge
    # (8.4 interactions a user, 9.45 at full size) and the head is weaker (39% of the likes on
    # the top 5% of the songs, 65.8% at full size: benchmarks/scale.py reports that figure).
    data = make_synthetic(**{**config().data.synthetic.to_dict(), "scale": 0.05})
    assert data.matrix.shape == (38_344, 13_021)
    assert 7.5 < data.n_interactions / data.n_users < 10.9
    counts = np.sort(data.item_counts())[::-1]
    assert counts[:len(counts) // 20].sum() > 0.3 * counts.sum()  # uniform: about 0.05
    assert 0.25 < (data.user_counts() < 5).mean() < 0.45  # users who stay in train only


@pytest.mark.slow
def test_scaled_down_default_run_through_the_command_line(tmp_path):
    workdir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "cml_tf.main", f"--config={CONFIG}", f"--workdir={workdir}",
         f"--config.data.synthetic.scale={SCALE}", "--config.train.epochs=4",
         "--config.train.valid_users=500", "--config.viz.max_items=200",
         "--config.export.tune_users=100", "--config.export.report_users=200",
         "--config.export.report_queries=20"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["data"]["users"] == round(766_882 * SCALE)
    assert metrics["data"]["items"] == round(260_417 * SCALE)
    assert metrics["epochs"] == 4
    assert [h["epoch"] for h in metrics["validation_history"]] == [2, 4]  # every 2 epochs
    cfg = config()
    cfg.data.synthetic.scale = SCALE
    split = load_data(cfg.data)
    with_items = {part: int((np.diff(getattr(split, part).matrix.indptr) > 0).sum())
                  for part in ("valid", "test")}
    assert f"validation on 500 of {with_items['valid']} users" in done.stderr
    assert metrics["valid"]["users"] == 500
    assert metrics["test"]["users"] == with_items["test"]  # exact: every user with test items
    # A popularity-heavy catalogue: the model must at least find the popular head.
    assert metrics["test"]["recall@50"] > 0.3 and metrics["valid"]["recall@50"] > 0.3
    assert metrics["export"]["recall@100"] > 0.9
    for name in ("item_map.png", "training_curves.png", "saved_model"):
        assert (workdir / name).exists(), name
