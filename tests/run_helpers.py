"""Small runs of ``train_and_evaluate`` shared by the training tests."""

import pathlib
import subprocess
import sys

from cml_tf.config import get_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**train_overrides):
    """A run of a few seconds: 300 planted users, 16 dimensions, no pictures, no export."""
    config = get_config()
    config.data.synthetic.update(n_users=300, n_items=200, n_clusters=5, mean_per_user=12)
    config.model.dim = 16
    config.train.update({"epochs": 3, "batch_size": 512, "eval_every": 1, "verbose": 0,
                         **train_overrides})
    config.export.enabled = False
    config.viz.enabled = False
    return config


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python process started in the repository."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
