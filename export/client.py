"""Ask a TF Serving model server for recommendations, over gRPC or REST.

    # gRPC (port 8500): tensorflow-serving-api's PredictRequest / PredictionService
    python export/client.py --grpc=localhost:8500 --model=cml u17 u42 "a new user"
    # REST (port 8501): plain JSON, no TensorFlow needed on the client side
    python export/client.py --rest=http://localhost:8501 --model=cml u17 u42
    # other signatures: the ids are item ids then
    python export/client.py --rest=http://localhost:8501 --signature=similar_items i3 i9
    python export/client.py --rest=http://localhost:8501 --signature=recommend_for_items i3 i9
    # request-time filters: only these items may appear / these may not (every id's row)
    python export/client.py --rest=http://localhost:8501 --signature=recommend_filtered \
        --include_items=i3,i7,i9,i12 --exclude_items=i7 u17 u42

Prints one JSON object per id: ``{"id": ..., "known": ..., "items": [[item, score], ...]}``.
``recommend_for_items`` (and its filtered twin) sends all ids as one list (one anonymous user)
and prints one object. The filtered signatures get the same ``include_items`` and
``exclude_items`` lists in every row; an empty ``--include_items`` means no inclusion filter.
The request and response formats are in export/README.md; the functions below build and read
them and are what the tests exercise.
"""

import argparse
import json
import math
import sys
import urllib.request

SIGNATURE_INPUTS = {"serving_default": "user_id", "similar_items": "item_id",
                    "recommend_for_items": "item_ids", "recommend_filtered": "user_id",
                    "similar_items_filtered": "item_id",
                    "recommend_for_items_filtered": "item_ids"}
ONE_ROW = ("recommend_for_items", "recommend_for_items_filtered")  # all ids: one anonymous user


def _inputs(signature: str, ids, include=(), exclude=()) -> dict:
    """input name -> nested lists of ids. A filtered signature gets the filter lists in every
    row, padded with "" (an empty list: one "", which means no filter)."""
    rows = [list(ids)] if signature in ONE_ROW else list(ids)
    inputs = {SIGNATURE_INPUTS[signature]: rows}
    if signature.endswith("_filtered"):
        batch = len(rows) if ids else 0
        inputs["include_items"] = [list(include) or [""]] * batch
        inputs["exclude_items"] = [list(exclude) or [""]] * batch
    return inputs


# ---- REST: plain JSON ------------------------------------------------------------------------


def rest_request(signature: str, ids, include=(), exclude=()) -> dict:
    """The JSON body of ``POST /v1/models/<model>[/versions/<v>]:predict`` (columnar format:
    "inputs" in, "outputs" out); ``include``/``exclude``: the filters of a ``*_filtered``
    signature."""
    return {"signature_name": signature, "inputs": _inputs(signature, ids, include, exclude)}


def rest_url(base: str, model: str, version: int | None = None) -> str:
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "")
    return base.rstrip("/") + path + ":predict"


def predict_rest(base: str, model: str, signature: str, ids, version=None,
                 timeout: float = 10.0, include=(), exclude=()) -> dict:
    """outputs name -> nested lists, as TF Serving's REST API returns them."""
    body = json.dumps(rest_request(signature, ids, include, exclude)).encode("utf-8")
    request = urllib.request.Request(rest_url(base, model, version), data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        # TF Serving writes NaN for empty slots; Python's json module reads it.
        payload = json.loads(response.read().decode("utf-8"))
    if "error" in payload:
        raise RuntimeError(payload["error"])
    return payload["outputs"]


# ---- gRPC: tensorflow-serving-api protos --------------------------------------------------------


def grpc_request(model: str, signature: str, ids, version: int | None = None, include=(),
                 exclude=()):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version:
        request.model_spec.version.value = int(version)
    for name, rows in _inputs(signature, ids, include, exclude).items():
        values = [[i.encode("utf-8") for i in row] if isinstance(row, list) else
                  row.encode("utf-8") for row in rows]
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
    return request


def outputs_from_grpc(response) -> dict:
    """outputs name -> nested lists (strings decoded), from a ``PredictResponse``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    result = {}
    for name, proto in response.outputs.items():
        value = tf.make_ndarray(proto)
        if value.dtype == object:
            value = [[b.decode("utf-8") for b in row] for row in value.tolist()] \
                if value.ndim == 2 else [b.decode("utf-8") for b in value.tolist()]
        else:
            value = value.tolist()
        result[name] = value
    return result


def predict_grpc(target: str, model: str, signature: str, ids, version=None,
                 timeout: float = 10.0, include=(), exclude=()) -> dict:
    import grpc  # pylint: disable=import-outside-toplevel
    from tensorflow_serving.apis import (  # pylint: disable=import-outside-toplevel
        prediction_service_pb2_grpc,
    )

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(grpc_request(model, signature, ids, version, include, exclude),
                                timeout=timeout)
    return outputs_from_grpc(response)


# ---- output ------------------------------------------------------------------------------------


def rows(outputs: dict, ids, signature: str) -> list[dict]:
    """One dict per query: id, known, [(item, score), ...] without empty slots."""
    labels = [list(ids)] if signature in ONE_ROW else list(ids)
    out = []
    for b, label in enumerate(labels):
        items = [(item, score) for item, score in zip(outputs["item_ids"][b], outputs["scores"][b])
                 if item and not (isinstance(score, float) and math.isnan(score))]
        out.append({"id": label, "known": bool(outputs["known"][b]), "items": items})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--grpc", help="host:port of the model server's gRPC API (8500)")
    where.add_argument("--rest", help="http://host:port of the REST API (8501)")
    parser.add_argument("--model", default="cml", help="model name in the server's config")
    parser.add_argument("--version", type=int, default=None, help="a version (default latest)")
    parser.add_argument("--signature", default="serving_default", choices=sorted(SIGNATURE_INPUTS))
    parser.add_argument("--include_items", default="",
                        help="comma-separated item ids: only these may appear (*_filtered)")
    parser.add_argument("--exclude_items", default="",
                        help="comma-separated item ids that may not appear (*_filtered)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("ids", nargs="+", help="user ids (item ids for the item signatures)")
    args = parser.parse_args(argv)
    filters = {"include": [i for i in args.include_items.split(",") if i],
               "exclude": [i for i in args.exclude_items.split(",") if i]}
    if (filters["include"] or filters["exclude"]) and not args.signature.endswith("_filtered"):
        parser.error(f"--include_items/--exclude_items need a *_filtered signature, not "
                     f"{args.signature}")
    if args.grpc:
        outputs = predict_grpc(args.grpc, args.model, args.signature, args.ids, args.version,
                               args.timeout, **filters)
    else:
        outputs = predict_rest(args.rest, args.model, args.signature, args.ids, args.version,
                               args.timeout, **filters)
    for row in rows(outputs, args.ids, args.signature):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
