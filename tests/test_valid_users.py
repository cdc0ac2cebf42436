"""``config.train.valid_users`` (CONTRACTS.md item 3): validation scores a fixed user sample."""

import logging

import numpy as np
import pytest

from cml_tf import callbacks, train
from cml_tf.data.from_config import load_data
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic
from cml_tf.evaluation import evaluate
from cml_tf.metrics import ranking_metrics
from cml_tf.models import CML

from run_helpers import tiny_config


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(n_users=300, n_items=200, n_clusters=5, mean_per_user=12,
                          with_features=False)
    return split_per_user(data, seed=0)


def all_validation_users(split):
    return np.flatnonzero(np.diff(split.valid.matrix.indptr) + split.valid_unseen > 0)


def test_the_sample_is_drawn_from_the_split_seed_and_is_the_same_every_time(split):
    every = all_validation_users(split)
    users = callbacks.validation_users(split, 40, seed=3)
    expected = np.sort(np.random.default_rng(3).choice(every, size=40, replace=False))
    np.testing.assert_array_equal(users, expected)
    np.testing.assert_array_equal(callbacks.validation_users(split, 40, seed=3), users)
    assert callbacks.validation_users(split, 0, seed=3) is None          # 0: every user
    assert callbacks.validation_users(split, len(every), seed=3) is None  # as many as there are
    with pytest.raises(ValueError, match="valid_users must be >= 0"):
        callbacks.validation_users(split, -1, seed=3)


def test_validation_callback_scores_the_sample_and_says_so(split, caplog):
    model = CML.from_interactions(split.train, dim=8)
    users = callbacks.validation_users(split, 40, seed=0)
    validation = callbacks.ValidationRecall(split, ks=(10, 50), users=users)
    validation.set_model(model)
    validation.set_params({"epochs": 1})
    logs = {}
    # On the absl logger itself: any SavedModel export earlier in the process pins its level to
    # the root's WARNING (tensorflow/python/trackable/autotrackable.py restores the effective
    # verbosity as an explicit one).
    with caplog.at_level(logging.INFO, logger="absl"):
        validation.on_epoch_end(0, logs)
    heldout, unseen, exclude = split.heldout("valid")
    expected = ranking_metrics(model.score, heldout.matrix, exclude=exclude, unseen=unseen,
                               ks=(10, 50), users=users)
    assert logs["val_recall@50"] == pytest.approx(expected["recall@50"], abs=1e-12)
    assert f"validation on 40 of {len(all_validation_users(split))} users" in caplog.text


@pytest.mark.slow
def test_training_validates_on_the_sample_and_tests_on_everyone(tmp_path):
    config = tiny_config(epochs=1, valid_users=40)
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["valid"]["users"] == 40
    split = load_data(config.data)
    assert metrics["test"]["users"] == evaluate(
        CML.from_interactions(split.train, dim=8), split, "test", ks=(10,))["users"]
    assert metrics["test"]["users"] > 200
