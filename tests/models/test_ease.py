"""EASE: both solves against a numpy float64 reference, training through the Keras fit loop,
scoring, the max_items refusal, save/load, and the export served from a fresh process."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from zoo_helpers import assert_recommend_excludes_known, assert_round_trip, assert_vectors_score
from zoo_helpers import planted_split, recall_vs_popularity

from cml_tf import export
from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.models import EASE, MODELS
from cml_tf.models.ease import solver_for

LAMBDA = 30.0


def numpy_ease(x, lam):
    """Steck's closed form in float64: B = -P / diag(P), diag(B) = 0, P = (X^T X + lam I)^-1."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def solved(split, **kwargs):
    model = EASE.from_interactions(split.train, regularization=LAMBDA, **kwargs)
    model.compile(optimizer="sgd")
    history = model.fit(positive_pairs_dataset(split.train, 1 << 30), epochs=2, verbose=0)
    return model, history


@pytest.fixture(scope="module")
def trained():
    split = planted_split()
    return split, solved(split)[0]


@pytest.mark.parametrize("solver", ["direct", "woodbury"])
def test_both_solves_match_numpy_and_report_the_objective(solver):
    split = planted_split()
    model, history = solved(split, solver=solver)
    x = split.train.matrix.toarray().astype(np.float64)
    b = numpy_ease(x, LAMBDA)
    np.testing.assert_allclose(model.item_item.numpy(), b, atol=2e-6)
    assert np.all(np.diag(model.item_item.numpy()) == 0)
    objective = ((x - x @ b) ** 2).sum() + LAMBDA * (b ** 2).sum()
    # One epoch is the solve; the second leaves it as it is.
    np.testing.assert_allclose(history.history["loss"], [objective / x.sum()] * 2, rtol=1e-4)
    users = np.array([0, 5, 9])
    np.testing.assert_allclose(model.score(tf.constant(users)).numpy(), x[users] @ b,
                               atol=2e-5)


def test_solver_choice_follows_the_cost():
    assert solver_for(1000, 20_000, 50_000) == "woodbury"   # fewer users than items
    assert solver_for(50_000, 2000, 500_000) == "direct"
    assert MODELS["ease"] is EASE


def test_learns_and_serves_like_the_zoo(trained, tmp_path):
    split, model = trained
    ours, popular = recall_vs_popularity(model, split)
    assert ours > 2 * popular, (ours, popular)
    assert_vectors_score(model)
    assert_recommend_excludes_known(model, split.train)
    assert_round_trip(model, tmp_path)
    b = model.item_item.numpy()
    scores, items = model.similar_items(tf.constant([3]), 5)
    row = b[3].copy()
    row[3] = -np.inf
    np.testing.assert_allclose(scores.numpy()[0], np.sort(row)[::-1][:5], rtol=1e-6)
    assert 3 not in items.numpy()[0]


def test_refuses_too_many_items_naming_the_memory():
    split = planted_split()
    with pytest.raises(ValueError, match=r"EASE: 400 items is more than model\.max_items=100; "
                                         r"its item-item matrix alone takes 1 MB .* raise "
                                         r"model\.max_items"):
        EASE.from_interactions(split.train, max_items=100)
    with pytest.raises(ValueError, match=r"40,000 items .* alone takes 6\.0 GiB and the direct "
                                         r"solve about 17\.9 GiB"):
        EASE(100_000, 40_000, max_items=20_000)
    with pytest.raises(ValueError, match="regularization must be > 0"):
        EASE.from_interactions(split.train, regularization=0.0)


LOADER = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
request = json.loads(sys.argv[2])
out = {}
for name, argument, value in (("serving_default", "user_id", request["users"]),
                              ("recommend_for_items", "item_ids", request["liked"]),
                              ("similar_items", "item_id", request["items"])):
    result = model.signatures[name](**{argument: tf.constant(value)})
    out[name] = {"items": [[i.decode() for i in row] for row in result["item_ids"].numpy()],
                 "scores": result["scores"].numpy().tolist()}
out["cml_tf_loaded"] = any(m.startswith("cml_tf") for m in sys.modules)
print(json.dumps(out))
"""


def top(scores, k, exclude):
    scores = scores.astype(np.float64).copy()
    scores[list(exclude)] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def assert_same_top(served, expected, ids):
    items, scores = expected
    np.testing.assert_allclose(served["scores"], scores, rtol=1e-4, atol=1e-5)
    assert served["items"][0] == ids[items[0]] or np.isclose(scores[0], scores[1], atol=1e-5)
    assert set(served["items"][:-1]) <= set(ids[items]) or np.isclose(scores[-2], scores[-1],
                                                                        atol=1e-5)


@pytest.mark.slow
def test_export_round_trips_from_a_fresh_process(trained, tmp_path):
    split, model = trained
    k = 10
    result = export.export_model(model, split, tmp_path / "ease", index="brute_force", k=k,
                                 recall_target=None, report_users=50, report_queries=2,
                                 tune_users=50, warmup=False)
    assert result["report"]["metric"] == "dot_product" and result["report"]["exact"]
    ids = split.train.item_ids
    users, items = [0, 7, 21], [3, 17]
    request = {"users": split.train.user_ids[users].tolist(),
               "liked": [ids[[1, 4, 9]].tolist(), [ids[2], "", ""]],
               "items": ids[items].tolist()}
    done = subprocess.run([sys.executable, "-c", LOADER, result["path"], json.dumps(request)],
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert not served["cml_tf_loaded"]
    x = split.train.matrix.toarray().astype(np.float64)
    b = model.item_item.numpy().astype(np.float64)
    known = split.known_matrix()
    for row, user in enumerate(users):  # X_u B, without the user's train + validation items
        assert_same_top({key: value[row] for key, value in served["serving_default"].items()},
                        top(x[user] @ b, k, known[user].indices), ids)
    # A new user who liked items I scores mean_{i in I} B_ij (EASE up to a positive factor).
    for row, given in enumerate([[1, 4, 9], [2]]):
        assert_same_top({key: value[row] for key, value in served["recommend_for_items"].items()},
                        top(b[given].mean(axis=0), k, given), ids)
    for row, item in enumerate(items):  # item i's row of B
        assert_same_top({key: value[row] for key, value in served["similar_items"].items()},
                        top(b[item], k, [item]), ids)
