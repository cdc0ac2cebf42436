"""The C++ path TF Serving is built on: export/serving_example.cc, compiled against the
TensorFlow wheel's own headers and libtensorflow_cc.so.2, loads each export with
tensorflow::LoadSavedModel and runs its signatures on string ids."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import REPO

sys.path.insert(0, str(REPO / "export"))
from build_example import build, compiler, scann_ops_library  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    if compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    return build(tmp_path_factory.mktemp("cpp") / "serving_example", optimize="-O1")


def run(binary, *args):
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def python_outputs(path, signature, key, ids):
    model = tf.saved_model.load(str(path))
    return {name: value.numpy() for name, value in
            model.signatures[signature](**{key: tf.constant(ids)}).items()}


def assert_same(cpp_json, expected):
    outputs = cpp_json["outputs"]
    assert set(outputs) == set(expected)
    for name, value in expected.items():
        got = outputs[name]["value"]
        if value.dtype == object:
            assert got == [[b.decode() for b in row] for row in value.tolist()], name
        elif value.dtype == bool:
            assert got == value.tolist(), name
        else:
            np.testing.assert_allclose(np.array(got, dtype=float), value, rtol=1e-6, atol=1e-7,
                                       equal_nan=True)


@pytest.mark.parametrize("label,threads", [("brute_force", 0), ("partitioned", 0), ("scann", 0),
                                           ("scann", -1), ("partitioned", -1)])
def test_cpp_serving_default_matches_python(label, threads, binary, trained, exports):
    """threads -1: every op in the calling thread (ConfigProto inter_op_parallelism_threads < 0),
    the low-latency setting the serving benchmark uses; the results must not change."""
    _, _, spec = trained
    path = exports[label][0]
    ids = [str(u) for u in spec.user_ids[:6]] + ["ghost", ""]
    args = [f"--ops_library={scann_ops_library()}"] if label == "scann" else []
    done = run(binary, *args, f"--inter_op_threads={threads}", path, *ids)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert result["signature"] == "serving_default" and result["input"] == "user_id"
    assert result["outputs"]["item_ids"]["shape"] == f"[{len(ids)},20]"
    assert result["outputs"]["known"]["value"] == [True] * 6 + [False, False]
    assert_same(result, python_outputs(path, "serving_default", "user_id", ids))


def test_cpp_similar_items_and_empty_batch(binary, trained, exports):
    _, _, spec = trained
    path = exports["brute_force"][0]
    items = [str(i) for i in spec.item_ids[:3]]
    done = run(binary, "--signature=similar_items", path, *items)
    assert done.returncode == 0, done.stderr[-4000:]
    assert_same(json.loads(done.stdout), python_outputs(path, "similar_items", "item_id", items))
    empty = run(binary, path)
    assert empty.returncode == 0, empty.stderr[-4000:]
    assert json.loads(empty.stdout)["outputs"]["item_ids"]["shape"] == "[0,20]"


@pytest.mark.parametrize("label", ["brute_force", "partitioned", "scann"])
def test_cpp_runs_the_filtered_signatures(label, binary, trained, exports):
    """recommend_filtered (every row gets the same lists) on every index through Session::Run;
    on the stock-TF partitioned export also its item twins and the latency mode with filters.
    The results are Python's."""
    _, _, spec = trained
    path = exports[label][0]
    ops = [f"--ops_library={scann_ops_library()}"] if label == "scann" else []
    include, exclude = [str(i) for i in spec.item_ids[::11][:15]] + ["ghost"], [
        str(spec.item_ids[0]), str(spec.item_ids[11])]
    flags = [f"--include_items={','.join(include)}", f"--exclude_items={','.join(exclude)}"]
    model = tf.saved_model.load(str(path))
    calls = [("recommend_filtered", "user_id",
              [str(u) for u in spec.user_ids[:5]] + ["ghost"])]
    if label == "partitioned":
        calls += [("similar_items_filtered", "item_id", [str(i) for i in spec.item_ids[20:23]]),
                  ("recommend_for_items_filtered", "item_ids", [str(spec.item_ids[5]), "ghost"])]
    for signature, key, ids in calls:
        done = run(binary, *ops, f"--signature={signature}", *flags, path, *ids)
        assert done.returncode == 0, done.stderr[-4000:]
        result = json.loads(done.stdout)
        assert result["signature"] == signature and result["input"] == key
        rows = 1 if key == "item_ids" else len(ids)
        queries = tf.constant([ids] if key == "item_ids" else ids)
        expected = {name: value.numpy() for name, value in model.signatures[signature](
            **{key: queries}, include_items=tf.constant([include] * rows),
            exclude_items=tf.constant([exclude] * rows)).items()}
        assert_same(result, expected)
        assert all(not set(row) - set(include) - {""} for row in
                   result["outputs"]["item_ids"]["value"])
    if label == "partitioned":
        timed = run(binary, "--signature=recommend_filtered", *flags, "--latency=50", path,
                    *[str(u) for u in spec.user_ids[:3]])
        assert timed.returncode == 0, timed.stderr[-4000:]
        assert json.loads(timed.stdout)["signature"] == "recommend_filtered"


def test_cpp_scann_export_needs_the_scann_ops(binary, exports):
    done = run(binary, exports["scann"][0], "u1")
    assert done.returncode != 0
    assert "Op type not registered" in done.stderr and "Scann" in done.stderr
    bad = run(binary, "--ops_library=/nonexistent/_scann_ops.so", exports["scann"][0], "u1")
    assert bad.returncode == 2 and "cannot load ops library" in bad.stderr
    assert os.path.exists(scann_ops_library())


def test_cpp_latency_mode(binary, trained, exports):
    _, _, spec = trained
    path = exports["scann"][0]
    ids = [str(u) for u in spec.user_ids[:5]]
    done = run(binary, f"--ops_library={scann_ops_library()}", "--latency=200",
               "--inter_op_threads=-1", path, *ids)
    assert done.returncode == 0, done.stderr[-4000:]
    timing = json.loads(done.stdout)
    assert timing["signature"] == "serving_default" and timing["calls"] == 200
    assert 0 < timing["p50_ms"] <= timing["p99_ms"] and timing["mean_ms"] > 0
    for bad in (["--latency=0", path, "u1"], ["--latency=10", path]):  # no calls, no ids
        refused = run(binary, *bad)
        assert refused.returncode == 1 and "usage" in refused.stderr


def test_build_script_usage():
    done = subprocess.run([sys.executable, str(REPO / "export" / "build_example.py"), "-h"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and done.stderr.startswith("usage: python export/build_example.py")
