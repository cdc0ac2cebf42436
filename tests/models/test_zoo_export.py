"""Dot-product models export through cml_tf.export and serve the exact maximum-inner-product
top-k (training input excluded) with each index (ScaNN brute force, exact brute force, the
partitioned index searching every partition) from a fresh process that imports only TensorFlow
(and ScaNN for the ScaNN index); a hybrid's embed_items signature gives its cold-start vectors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from zoo_helpers import fit, planted_split

from cml_tf import export
from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.models import BPRMF, CDLMLP, WRMF

pytestmark = pytest.mark.slow
K = 10

# One fresh process for every export: the ones that need no ScaNN are loaded before ScaNN's ops
# are imported (so they are known to load without them), the ScaNN one after.
LOADER = """
import json, sys
import tensorflow as tf
exports, request = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = {}
for name, (index, path) in sorted(exports.items(), key=lambda e: e[1][0] == "scann"):
    if index == "scann":
        import scann  # noqa: F401  (registers ScaNN's ops)
    model = tf.saved_model.load(path)
    out = model.signatures["serving_default"](user_id=tf.constant(request["users"]))
    result = {"items": [[i.decode() for i in row] for row in out["item_ids"].numpy()],
              "scores": out["scores"].numpy().tolist()}
    if "embed_items" in model.signatures:
        emb = model.signatures["embed_items"](
            feature_ids=tf.constant(request["feature_ids"]),
            feature_values=tf.constant(request["feature_values"]))
        result["embedding"] = {k: v.numpy().tolist() for k, v in emb.items()}
    results[name] = result
results["cml_tf_loaded"] = any(m.startswith("cml_tf") for m in sys.modules)
print(json.dumps(results))
"""

def exact_mips(model, split, users, k):
    """numpy: top-k of u . v over the items not in the user's training input (train + valid)."""
    scores = model.user_vectors[users] @ model.item_vectors.T
    known = split.known_matrix()
    for row, user in enumerate(users):
        scores[row, known[user].indices] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


@pytest.fixture(scope="module")
def trained():
    split = planted_split()
    bpr = BPRMF.from_interactions(split.train, dim=8, seed=0)
    fit(bpr, split.train, epochs=3, lr=0.1)
    cdl = CDLMLP.from_interactions(split.train, dim=8, hidden=16, seed=0)
    fit(cdl, split.train, epochs=3)
    wrmf = WRMF.from_interactions(split.train, dim=8, alpha=10.0, regularization=0.1, seed=0)
    wrmf.compile(optimizer="sgd")
    wrmf.fit(positive_pairs_dataset(split.train, 10**6), epochs=2, verbose=0)
    return split, {"bpr": bpr, "cdl": cdl, "wrmf": wrmf}


# The partitioned index (standard ops) searching all of its partitions is exact.
OPTIONS = {"partitioned": {"num_partitions": 4, "num_partitions_to_search": 4,
                           "max_partition_size_factor": None}}


EXPORTS = [("bpr", "brute_force"), ("bpr", "scann"), ("cdl", "brute_force"),
           ("wrmf", "partitioned")]
USERS = np.arange(0, 40, 3)


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """Every export of EXPORTS and what one fresh process serves from each, by "name-index"."""
    split, models = trained
    folder = tmp_path_factory.mktemp("zoo_exports")
    exports = {}
    for name, index in EXPORTS:
        result = export.export_model(models[name], split, folder / f"{name}-{index}",
                                     index=index, k=K, index_options=OPTIONS.get(index),
                                     recall_target=None, report_users=50, report_queries=2,
                                     tune_users=50, warmup=False)
        assert result["report"]["metric"] == "dot_product" and result["report"]["exact"]
        exports[f"{name}-{index}"] = (index, result["path"])
    names = split.train.feature_names
    request = {"users": split.train.user_ids[USERS].tolist(),
               "feature_ids": [[names[0], names[1]], [names[2], ""]],
               "feature_values": [[1.0, 1.0], [1.0, 0.0]]}
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(exports),
                           json.dumps(request)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, index", EXPORTS)
def test_dot_product_export_serves_exact_mips_from_a_fresh_process(trained, served, name,
                                                                   index):
    split, models = trained
    model = models[name]
    assert not served["cml_tf_loaded"]
    served = served[f"{name}-{index}"]
    names = split.train.feature_names
    expected_items, expected_scores = exact_mips(model, split, USERS, K)
    np.testing.assert_allclose(served["scores"], expected_scores, rtol=1e-4, atol=1e-4)
    # The same items, up to the order of (near) ties.
    for got, want, scores in zip(served["items"], expected_items, expected_scores):
        assert got[0] == split.train.item_ids[want[0]] or np.isclose(scores[0], scores[1])
        assert set(got[:-1]) <= set(split.train.item_ids[want]) or np.isclose(
            scores[-2], scores[-1])
    if name == "cdl":
        features = tf.sparse.from_dense(tf.constant(
            [[1.0 if j in (0, 1) else 0.0 for j in range(len(names))],
             [1.0 if j == 2 else 0.0 for j in range(len(names))]]))
        expected = model.embed_items(features).numpy()
        (embedding,) = [np.array(v) for v in served["embedding"].values()
                        if np.array(v).ndim == 2]
        np.testing.assert_allclose(embedding, expected, rtol=1e-4, atol=1e-5)
