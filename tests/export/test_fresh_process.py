"""Every export in a fresh Python process that imports only TensorFlow (and ScaNN for a ScaNN
index), never cml_tf; ``saved_model_cli show`` and ``run`` on the stock-TensorFlow exports.
The filtered signatures run there too and must give what exact search over the allowed items
gives (tests/export/test_filtered.py checks them in depth)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from export_helpers import EXACT, K, exact_serving, filtered_reference, recall, run_python

from cml_tf.serving import check

pytestmark = pytest.mark.slow

LOADER = """
import json, sys
import numpy as np
import tensorflow as tf
if sys.argv[1] == "scann":
    import scann  # noqa: F401  (registers ScaNN's ops)
requests = json.load(open(sys.argv[2]))
out = {}
for label, path in json.loads(sys.argv[3]).items():
    model = tf.saved_model.load(path)
    result = {}
    for name, inputs in requests.items():
        if name not in model.signatures:
            continue
        tensors = {key: tf.constant(value, tf.float32 if key == "feature_values" else tf.string)
                   for key, value in inputs.items()}
        outputs = model.signatures[name](**tensors)
        result[name] = {key: (np.char.decode(value.numpy().astype(bytes)).tolist()
                              if value.dtype == tf.string else value.numpy().tolist())
                        for key, value in outputs.items()}
    out[label] = result
out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def requests_file(trained, tmp_path_factory):
    _, split, spec = trained
    names = split.train.feature_names
    requests = {
        "serving_default": {"user_id": spec.user_ids.tolist() + ["ghost", ""]},
        "similar_items": {"item_id": spec.item_ids[:40].tolist() + ["ghost"]},
        "recommend_for_items": {"item_ids": [["i1", "i2", ""], ["", "", ""], ["i5", "x", "i6"]]},
        "embed_items": {"feature_ids": [[names[0], names[1]], [names[2], ""]],
                        "feature_values": [[1.0, 1.0], [1.0, 0.0]]},
        "recommend_filtered": FILTERED_REQUEST(spec),
    }
    path = tmp_path_factory.mktemp("requests") / "requests.json"
    path.write_text(json.dumps(requests))
    return path, requests


def FILTERED_REQUEST(spec):  # noqa: N802  (a request, built like the constants above)
    """Rows: an inclusion list with an unknown id, no filter but exclusions, unknown ids only,
    an unknown user with an inclusion list."""
    listed = spec.item_ids[::9][:12].tolist()
    return {"user_id": [spec.user_ids[1], spec.user_ids[2], spec.user_ids[3], "ghost"],
            "include_items": [listed + ["ghost"], ["", ""] + [""] * 11,
                              ["ghost"] + [""] * 12, listed + [""]],
            "exclude_items": [[listed[0]], spec.item_ids[:1].tolist(), [""], [""]]}


def assert_filtered_is_exact(spec, result, request, exact):
    users = request["user_id"]
    rows = [spec.user_ids.tolist().index(u) if u in spec.user_ids else None for u in users]
    queries = np.stack([spec.user_vectors[r] if r is not None else spec.fallback_query()
                        for r in rows])
    own = [spec.known.indices[spec.known.indptr[r]:spec.known.indptr[r + 1]]
           if r is not None else [] for r in rows]
    ref_ids, ref_scores = filtered_reference(spec, queries, request["include_items"],
                                    request["exclude_items"], own)
    got = result["recommend_filtered"]
    ids, scores = np.array(got["item_ids"], dtype=object), np.array(got["scores"], dtype=float)
    checked = [0, 1, 2, 3] if exact else [0, 2, 3]        # row 1 has no inclusion list
    assert check.same_top_k(ids[checked], scores[checked], ref_ids[checked],
                            ref_scores[checked], atol=1e-5)
    assert got["known"] == [True, True, True, False] and set(ids[2]) == {""}


def load_fresh(mode, requests_path, paths):
    done = run_python(LOADER, mode, requests_path,
                      json.dumps({key: str(value) for key, value in paths.items()}))
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_process(loaded_model, requests):
    import tensorflow as tf
    out = {}
    for name, inputs in requests.items():
        if name in loaded_model.signatures:
            tensors = {key: tf.constant(value, tf.float32 if key == "feature_values"
                                        else tf.string) for key, value in inputs.items()}
            out[name] = {key: value.numpy() for key, value in
                         loaded_model.signatures[name](**tensors).items()}
    return out


def test_stock_exports_load_with_tensorflow_alone(trained, exports, requests_file):
    _, _, spec = trained
    path, requests = requests_file
    labels = ("brute_force", "partitioned", "partitioned_full")
    got = load_fresh("plain", path, {label: exports[label][0] for label in labels})
    assert not {"scann", "cml_tf", "tf_keras", "tensorflow_recommenders"} & set(got["modules"])
    users = requests["serving_default"]["user_id"][:-2]
    ref_ids, ref_scores = exact_serving(spec, users)
    for label in labels:
        result = got[label]
        assert set(result) == set(requests), label
        default = result["serving_default"]
        assert default["known"] == [True] * len(users) + [False, False]
        ids = np.array(default["item_ids"], dtype=object)
        scores = np.array(default["scores"], dtype=float)
        if label in EXACT:
            assert check.same_top_k(ids[:-2], scores[:-2], ref_ids, ref_scores, atol=1e-5), label
        else:
            reported = exports[label][1]["report"][f"recall@{K}"]
            assert recall(ids[:-2], ref_ids) >= min(reported, 1.0) - 0.02, label
        assert default["item_ids"][-1] == default["item_ids"][-2]  # the same fallback
        if label in EXACT:
            fallback_ids, _ = check.exact_fallback(spec, K)
            assert default["item_ids"][-1] == fallback_ids.tolist(), label
        assert np.array(result["embed_items"]["embeddings"]).shape == (2, spec.dim)
        assert result["similar_items"]["known"][-1] is False
        assert_filtered_is_exact(spec, result, requests["recommend_filtered"], label in EXACT)


def test_scann_export_loads_with_scann_and_fails_without(trained, exports, requests_file):
    _, _, spec = trained
    path, requests = requests_file
    got = load_fresh("scann", path, {"scann": exports["scann"][0],
                                     "scann_default": exports["scann_default"][0]})
    assert "scann" in got["modules"] and "cml_tf" not in got["modules"]
    users = requests["serving_default"]["user_id"][:-2]
    ref_ids, ref_scores = exact_serving(spec, users)
    for label in ("scann", "scann_default"):
        default = got[label]["serving_default"]
        ids = np.array(default["item_ids"], dtype=object)[:-2]
        scores = np.array(default["scores"], dtype=float)[:-2]
        reported = exports[label][1]["report"][f"recall@{K}"]
        assert recall(ids, ref_ids) >= reported - 0.01, label
        if label in EXACT:
            assert check.same_top_k(ids, scores, ref_ids, ref_scores, atol=1e-5)
        assert all(not (set(row) & _known(spec, user)) for row, user in zip(ids, users))
        assert set(got[label]) == set(requests)
        assert_filtered_is_exact(spec, got[label], requests["recommend_filtered"],
                                 label in EXACT)

    script = "import sys, tensorflow as tf\ntf.saved_model.load(sys.argv[1])"
    done = run_python(script, exports["scann"][0])
    assert done.returncode != 0 and "Op type not registered" in done.stderr


def _known(spec, user):
    u = spec.user_ids.tolist().index(user)
    return set(spec.item_ids[spec.known.indices[spec.known.indptr[u]:spec.known.indptr[u + 1]]])


def saved_model_cli():
    found = shutil.which("saved_model_cli")
    if found:
        return [found]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


# Both stock exports load in test_stock_exports_load_with_tensorflow_alone; the command line
# shows one and runs the other (each call is a TensorFlow start-up).
def test_saved_model_cli_shows_one_stock_export_and_runs_the_other(trained, exports):
    import tensorflow as tf
    _, _, spec = trained
    path = exports["brute_force"][0]
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    show = subprocess.run([*saved_model_cli(), "show", "--dir", str(path), "--all"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert show.returncode == 0, show.stderr[-3000:]
    for expected in ("signature_def['serving_default']", "inputs['user_id'] tensor_info",
                     "dtype: DT_STRING", "outputs['item_ids'] tensor_info",
                     f"shape: (-1, {K})", "outputs['known'] tensor_info", "dtype: DT_BOOL",
                     "signature_def['similar_items']", "signature_def['recommend_for_items']",
                     "signature_def['embed_items']", "inputs['feature_values'] tensor_info"):
        assert expected in show.stdout, expected
    path = exports["partitioned"][0]
    users = [str(spec.user_ids[3]), "ghost"]
    run = subprocess.run(
        [*saved_model_cli(), "run", "--dir", str(path), "--tag_set", "serve",
         "--signature_def", "serving_default", "--input_exprs", f"user_id={users!r}"],
        capture_output=True, text=True, timeout=300, env=env, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    model = tf.saved_model.load(str(path))
    expected = model.signatures["serving_default"](user_id=tf.constant(users))
    first_ids = [i.decode() for i in expected["item_ids"].numpy()[0][:3]]
    assert all(f"b'{i}'" in run.stdout for i in first_ids), run.stdout[-2000:]
    assert "Result for output key known" in run.stdout and "[ True False]" in run.stdout
