"""Bad serving inputs: every signature checks the rank of each input (and that the filter lists
have a row per query) and fails with a message that names the input and the shape it must
have, on every index, in process and through the REST API of a model server; every signature
takes an empty batch (ScaNN's recommend_for_items once failed on one)."""

import json
import shutil
import urllib.error
import urllib.request

import pytest
import tensorflow as tf
from export_helpers import REPO
from stand_in_model_server import StandInModelServer

from cml_tf.serving.check import empty_batch_inputs

pytestmark = pytest.mark.bad_input

VECTOR, ROWS = "[batch]", "[batch, length]"
ONE, TWO = [["u1"]], [["i1", ""]]
CASES = [  # signature, inputs, the input the message must name, what it must say
    ("serving_default", {"user_id": [["u1", "u2"]]}, "user_id", VECTOR),
    ("serving_default", {"user_id": "u1"}, "user_id", VECTOR),
    ("similar_items", {"item_id": [["i1"]]}, "item_id", VECTOR),
    ("recommend_for_items", {"item_ids": ["i1", "i2"]}, "item_ids", ROWS),
    ("recommend_for_items", {"item_ids": [[["i1"]]]}, "item_ids", ROWS),
    ("embed_items", {"feature_ids": ["t1"], "feature_values": [[1.0]]}, "feature_ids", ROWS),
    ("embed_items", {"feature_ids": [["t1"]], "feature_values": 1.0}, "feature_values", ROWS),
    ("recommend_filtered", {"user_id": ONE, "include_items": TWO, "exclude_items": TWO},
     "user_id", VECTOR),
    ("recommend_filtered", {"user_id": ["u1"], "include_items": ["i1"], "exclude_items": TWO},
     "include_items", ROWS),
    ("recommend_filtered", {"user_id": ["u1"], "include_items": TWO,
                            "exclude_items": [[["i1"]]]}, "exclude_items", ROWS),
    ("recommend_filtered", {"user_id": ["u1", "u2"], "include_items": TWO,
                            "exclude_items": TWO * 2}, "include_items", "one row per entry"),
    ("recommend_filtered", {"user_id": ["u1"], "include_items": TWO,
                            "exclude_items": TWO * 3}, "exclude_items", "one row per entry"),
    ("similar_items_filtered", {"item_id": "i1", "include_items": TWO, "exclude_items": TWO},
     "item_id", VECTOR),
    ("similar_items_filtered", {"item_id": ["i1"], "include_items": "i1",
                                "exclude_items": TWO}, "include_items", ROWS),
    ("recommend_for_items_filtered", {"item_ids": ["i1"], "include_items": TWO,
                                      "exclude_items": TWO}, "item_ids", ROWS),
    ("recommend_for_items_filtered", {"item_ids": TWO, "include_items": TWO * 2,
                                      "exclude_items": TWO}, "include_items",
     "one row per entry of item_ids"),
]
LABELS = ["brute_force", "partitioned", "scann"]


@pytest.fixture(scope="module")
def loaded(exports):
    return {label: tf.saved_model.load(str(exports[label][0])) for label in LABELS}


def tensor(key, value):
    return tf.constant(value, tf.float32 if key == "feature_values" else tf.string)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_wrong_shapes_name_the_input(label, case, loaded):
    signature, inputs, name, says = CASES[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        loaded[label].signatures[signature](
            **{key: tensor(key, value) for key, value in inputs.items()})
    message = str(raised.value)
    assert f"serving input {name} must" in message and says in message, message[-600:]


@pytest.mark.parametrize("label", LABELS)
def test_every_signature_takes_an_empty_batch(label, trained, loaded):
    """(Every export's smoke test does the same before it is published.)"""
    _, _, spec = trained
    for name, inputs in empty_batch_inputs(spec).items():
        out = loaded[label].signatures[name](**inputs)
        first = out["embeddings"] if name == "embed_items" else out["item_ids"]
        assert first.shape[0] == 0, name


def test_a_model_server_client_gets_the_message(exports, tmp_path):
    """What a REST client of TF Serving reads: the model's own message, not a graph node's."""
    base = tmp_path / "cml"
    shutil.copytree(exports["partitioned"][0], base / "1")
    with StandInModelServer(REPO / "export" / "models.config", {"cml": base}) as server:
        body = json.dumps({"signature_name": "recommend_filtered",
                           "inputs": {"user_id": ["u1", "u2"], "include_items": [["i1"]],
                                      "exclude_items": [[""], [""]]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/cml:predict", data=body,
            headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
        error = json.loads(raised.value.read().decode())["error"]
    assert "serving input include_items must have one row per entry of user_id" in error
