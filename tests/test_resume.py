"""A run interrupted by kill -9 and resumed ends exactly where an uninterrupted run ends
(issue 15.5), and a damaged checkpoint falls back to the newest one that restores (15.3).

Tolerance: none, the metrics are compared with ``==``. Every random draw of a run is a function
of the seed and of state saved inside the checkpoint (the sampler's and the dropout's
``tf.random.Generator`` states; the input order is a function of the seed and the epoch), the
validation history and early-stopping state are saved in the same checkpoint, and the CPU
kernels these models use are deterministic, so on CPU a resumed run repeats the uninterrupted
one bit for bit. (On a GPU, TensorFlow's scatter-adds may sum in another order; there a small
tolerance would be needed.)
"""

import json
import logging
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf import train
from cml_tf.data.pipeline import batches_per_epoch, positive_pairs_dataset
from cml_tf.data.synthetic import make_synthetic
from cml_tf.layers.feature_prior import FeaturePrior

from run_helpers import InterruptAt, resume_config, run_killed

def test_each_epochs_order_is_a_function_of_the_seed_and_the_epoch():
    data = make_synthetic(n_users=60, n_items=40, seed=2, with_features=False)
    n = batches_per_epoch(data, 32)

    def passes(first, count):
        batches = positive_pairs_dataset(data, 32, seed=5, first_epoch=first).take(count * n)
        pairs = np.concatenate([np.stack([u.numpy(), i.numpy()], 1) for u, i in batches])
        return pairs.reshape(count, -1, 2)

    from_start, resumed = passes(0, 4), passes(2, 2)
    np.testing.assert_array_equal(resumed, from_start[2:])  # a new stream, the same epochs
    expected = sorted(zip(*map(list, data.pairs())))
    for one_pass in from_start:
        assert sorted(map(tuple, one_pass.tolist())) == expected
    assert not np.array_equal(from_start[0], from_start[1])


def test_dropout_masks_continue_from_a_restored_checkpoint(tmp_path):
    features = sp.random(30, 12, density=0.3, format="csr", random_state=0, dtype=np.float32)
    rows = tf.sparse.from_dense(features.toarray())

    def prior():
        return FeaturePrior(8, 12, hidden=16, dropout=0.5, seed=3)

    first = prior()
    first(rows, training=True)
    path = tf.train.Checkpoint(prior=first).write(str(tmp_path / "ckpt"))
    expected = first(rows, training=True).numpy()
    second = prior()
    tf.train.Checkpoint(prior=second).restore(path).expect_partial()
    np.testing.assert_array_equal(second(rows, training=True).numpy(), expected)


FIGURES = ("valid", "test", "validation_history", "best_epoch", "epochs")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The metrics of the uninterrupted run."""
    return train.train_and_evaluate(resume_config(), str(tmp_path_factory.mktemp("ref") / "run"))


def same_figures(metrics, reference):
    for key in FIGURES:
        assert metrics[key] == reference[key], key
    assert [row["epoch"] for row in metrics["validation_history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_run_killed_and_resumed_ends_exactly_like_an_uninterrupted_one(reference, tmp_path):
    workdir = tmp_path / "run"
    run_killed(workdir, "end", 3)  # after epoch 3's validation pass, before its checkpoint
    assert not (workdir / "metrics.json").exists()
    state = json.loads((workdir / "checkpoints" / "validation.json").read_text())
    assert [row["epoch"] for row in state["history"]] == [1, 2]
    metrics = train.train_and_evaluate(resume_config(), str(workdir))
    same_figures(metrics, reference)
    assert len(metrics["epoch_seconds"]) == 2  # epochs 3 and 4 ran in this process


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A workdir whose run stopped after epoch 3's checkpoint."""
    workdir = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(resume_config(), str(workdir), callbacks=[InterruptAt(4)])
    return workdir


def truncate(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["data", "index", "state file"])
def test_a_damaged_checkpoint_falls_back_with_one_warning(damage, interrupted, reference,
                                                          tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(interrupted, workdir)
    checkpoints = workdir / "checkpoints"
    if damage == "data":
        truncate(checkpoints / "ckpt-3.data-00000-of-00001")
    elif damage == "index":
        truncate(checkpoints / "ckpt-3.index")
    else:
        (checkpoints / "checkpoint").write_bytes(b"model_checkpoint_path: \"ck\x00\xff{{garbled")
    with caplog.at_level(logging.WARNING, logger="absl"):
        metrics = train.train_and_evaluate(resume_config(), str(workdir))
    same_figures(metrics, reference)
    # Ours only: TensorFlow may add "Value in checkpoint could not be found" lines when the
    # failed attempt's restore status is garbage-collected, at a moment that varies from run
    # to run (seen once in CI); silencing those is the next step (expect_partial on failure).
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and "checkpoint" in r.getMessage() and "/cml_tf/" in r.pathname]
    assert len(warnings) == 1, warnings
    if damage == "state file":
        assert str(checkpoints / "checkpoint") in warnings[0] and "ckpt-3" in warnings[0]
        assert len(metrics["epoch_seconds"]) == 1  # resumed after epoch 3
    else:
        assert str(checkpoints / "ckpt-3") in warnings[0] and "does not restore" in warnings[0]
        assert len(metrics["epoch_seconds"]) == 2  # from epoch 2's checkpoint


@pytest.mark.slow
def test_when_no_checkpoint_restores_the_run_refuses_to_start_over(interrupted, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(interrupted, workdir)
    for index in (workdir / "checkpoints").glob("ckpt-*.index"):
        truncate(index)
    with pytest.raises(train.WorkdirError, match="none of the checkpoints .* restores"):
        train.train_and_evaluate(resume_config(), str(workdir))
    assert not (workdir / "metrics.json").exists()
