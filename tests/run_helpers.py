"""Small runs of ``train_and_evaluate`` shared by the training tests."""

import pathlib
import subprocess
import sys

import tensorflow as tf

from cml_tf.config import get_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**train_overrides):
    """A run of a few seconds: 300 planted users, 16 dimensions, no pictures, no export, and
    no XLA (compiling the sampler is half the cost of a run this small)."""
    config = get_config()
    config.data.synthetic.update(n_users=300, n_items=200, n_clusters=5, mean_per_user=12)
    config.model.dim = 16
    config.train.update({"epochs": 3, "batch_size": 512, "eval_every": 1, "verbose": 0,
                         "jit_sampling": False, **train_overrides})
    config.export.enabled = False
    config.viz.enabled = False
    return config


def exporting_config(**train_overrides):
    """``tiny_config`` with a quick export: exact index, k = 10, a small index report."""
    config = tiny_config(**train_overrides)
    config.export.update(enabled=True, index="brute_force", k=10, recall_target=0,
                         report_users=50, report_queries=5)
    return config


def run_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python process started in the repository."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def write_own_split(folder: pathlib.Path, **synthetic) -> dict:
    """A planted synthetic data set split 60/20/20 per user and written as a person brings
    their own: ``train.csv``, ``valid.csv`` and ``test.csv`` with a ``user,item`` header.
    ``synthetic`` goes to ``make_synthetic`` (sizes); returns the three paths by part."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    from cml_tf.data import make_synthetic, split_per_user  # pylint: disable=import-outside-toplevel
    data = make_synthetic(**synthetic, with_features=False)
    split = split_per_user(data, seed=0)
    paths = {}
    for part in ("train", "valid", "test"):
        users, items = getattr(split, part).pairs()
        paths[part] = folder / f"{part}.csv"
        pd.DataFrame({"user": data.user_ids[users], "item": data.item_ids[items]}).to_csv(
            paths[part], index=False)
    return paths


def resume_config():
    """The run the resume tests interrupt: CML+F (sampling and dropout both draw random numbers),
    4 epochs with a validation pass after each."""
    config = tiny_config(epochs=4)
    config.data.use_features = True
    return config


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, "tests")
import cml_tf, tensorflow as tf
from cml_tf import train
from run_helpers import resume_config, tiny_config

class Kill(tf.keras.callbacks.Callback):  # SIGKILL: no Python clean-up of any kind runs
    def on_epoch_{when}(self, epoch, logs=None):
        if epoch + 1 == {epoch}:
            os.kill(os.getpid(), signal.SIGKILL)

train.train_and_evaluate({config}, {workdir!r}, overwrite={overwrite}, callbacks=[Kill()])
"""


def run_killed(workdir, when: str, epoch: int, config: str = "resume_config()",
               overwrite: bool = False):
    """Runs ``config`` (an expression) into ``workdir`` in a fresh process that kills itself
    with SIGKILL at the start (``when="begin"``: after the previous epoch's checkpoint) or the
    end (``"end"``: after its validation pass, before its checkpoint) of epoch ``epoch``."""
    done = run_python(KILL_SCRIPT.format(config=config, when=when, epoch=epoch,
                                         workdir=str(workdir), overwrite=overwrite))
    assert done.returncode == -9, done.stderr[-3000:]  # killed, not failed
    return done


class InterruptAt(tf.keras.callbacks.Callback):
    """Ctrl-C at the start of epoch ``epoch`` (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt
