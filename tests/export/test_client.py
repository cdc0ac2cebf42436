"""export/client.py (tensorflow-serving-api request protos for gRPC, plain JSON for REST) against
a stand-in model server on 127.0.0.1 that runs the real export; export/models.config; the
TF Serving warm-up requests written with every export."""

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import K, REPO
from google.protobuf import text_format
from stand_in_model_server import StandInModelServer
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

CONFIG = REPO / "export" / "models.config"


def load_client():
    spec = importlib.util.spec_from_file_location("cml_client", REPO / "export" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    """Serves the partitioned export as model "cml" (version folders as the server sees them)."""
    base = tmp_path_factory.mktemp("models") / "cml"
    base.mkdir()
    shutil.copytree(exports["partitioned"][0], base / "3")
    with StandInModelServer(CONFIG, {"cml": base}) as running:
        yield running


def test_model_config_file_parses():
    config = text_format.Parse(CONFIG.read_text(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == "cml" and entry.model_platform == "tensorflow"
    assert entry.base_path == "/models/cml" and entry.model_version_policy.latest.num_versions == 1


def expected(exports, signature, key, value):
    model = tf.saved_model.load(str(exports["partitioned"][0]))
    return {name: out.numpy() for name, out in
            model.signatures[signature](**{key: tf.constant(value)}).items()}


def test_grpc_and_rest_clients(server, trained, exports):
    client = load_client()
    _, _, spec = trained
    users = [str(u) for u in spec.user_ids[:3]] + ["someone new"]
    want = expected(exports, "serving_default", "user_id", users)
    want_ids = [[b.decode() for b in row] for row in want["item_ids"].tolist()]
    grpc_out = client.predict_grpc(f"127.0.0.1:{server.grpc_port}", "cml", "serving_default",
                                   users)
    rest_out = client.predict_rest(f"http://127.0.0.1:{server.rest_port}", "cml",
                                   "serving_default", users, version=3)
    for outputs in (grpc_out, rest_out):
        assert outputs["item_ids"] == want_ids
        np.testing.assert_allclose(np.array(outputs["scores"], float), want["scores"], rtol=1e-6,
                                   equal_nan=True)
        assert outputs["known"] == [True, True, True, False]
    rows = client.rows(rest_out, users, "serving_default")
    assert [r["id"] for r in rows] == users and len(rows[0]["items"]) == K


def test_item_signatures_over_rest(server, trained, exports):
    client = load_client()
    _, _, spec = trained
    base = f"http://127.0.0.1:{server.rest_port}"
    items = [str(i) for i in spec.item_ids[:2]]
    similar = client.predict_rest(base, "cml", "similar_items", items)
    assert [items[b] not in similar["item_ids"][b] for b in range(2)] == [True, True]
    liked = client.predict_rest(base, "cml", "recommend_for_items", items)
    want = expected(exports, "recommend_for_items", "item_ids", [items])
    assert liked["item_ids"] == [[b.decode() for b in want["item_ids"][0]]]
    assert client.rest_request("recommend_for_items", items) == {
        "signature_name": "recommend_for_items", "inputs": {"item_ids": [items]}}
    with pytest.raises(Exception, match="400|Servable"):
        client.predict_rest(base, "no_such_model", "serving_default", items)


def test_client_command_line(server, trained):
    _, _, spec = trained
    user = str(spec.user_ids[7])
    for flag in (f"--grpc=127.0.0.1:{server.grpc_port}",
                 f"--rest=http://127.0.0.1:{server.rest_port}"):
        done = subprocess.run([sys.executable, str(REPO / "export" / "client.py"), flag,
                               "--model=cml", user, "nobody"], capture_output=True, text=True,
                              timeout=300, check=False,
                              env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
        assert [(r["id"], r["known"]) for r in lines] == [(user, True), ("nobody", False)]
        assert len(lines[0]["items"]) == K and all(len(pair) == 2 for pair in lines[0]["items"])


def test_warmup_requests_are_valid_predict_requests(exports):
    path = exports["scann"][0]
    model = tf.saved_model.load(str(path))
    records = list(tf.data.TFRecordDataset(
        str(path / "assets.extra" / "tf_serving_warmup_requests")).as_numpy_iterator())
    assert len(records) == 2
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        ids = tf.make_ndarray(request.inputs["user_id"])
        out = model.signatures["serving_default"](user_id=tf.constant(ids))
        assert out["known"].numpy().all() and out["item_ids"].shape == (len(ids), K)
