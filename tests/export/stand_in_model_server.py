"""A stand-in for TF Serving's model server, for the client tests only.

The real ``tensorflow_model_server`` binary is not installable on this machine (it is neither on
PyPI nor in Debian, and the Docker images cannot be pulled), so the client is tested against
this: the same ``models.config`` file, the same folder layout (highest numeric version), the
real gRPC ``PredictionService`` (tensorflow-serving-api's generated servicer) and the REST
``/v1/models/<name>[/versions/<v>]:predict`` endpoint with the columnar JSON format, both
executing the real SavedModel through its signatures. It implements only what the client uses.
"""

import json
import math
import pathlib
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2


def _latest_version(base_path: pathlib.Path) -> int:
    versions = [int(p.name) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise FileNotFoundError(f"no version under {base_path}")
    return max(versions)


class Models:
    """name -> {version: loaded SavedModel}, from a ModelServerConfig text file."""

    def __init__(self, config_file, base_paths: dict):
        config = text_format.Parse(pathlib.Path(config_file).read_text(),
                                   model_server_config_pb2.ModelServerConfig())
        self.models = {}
        for entry in config.model_config_list.config:
            base = pathlib.Path(base_paths.get(entry.name, entry.base_path))
            version = _latest_version(base)
            self.models[entry.name] = {version: tf.saved_model.load(str(base / str(version)))}

    def predict(self, name, version, signature, inputs: dict) -> dict:
        if name not in self.models:
            raise KeyError(f"Servable not found for request: Latest({name})")
        versions = self.models[name]
        model = versions[version or max(versions)]
        function = model.signatures[signature or "serving_default"]
        return function(**inputs)


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models):
        self.models = models

    def Predict(self, request, context):  # noqa: N802 (gRPC method name)
        try:
            inputs = {key: tf.make_ndarray(value) for key, value in request.inputs.items()}
            outputs = self.models.predict(request.model_spec.name,
                                          request.model_spec.version.value or None,
                                          request.model_spec.signature_name, inputs)
        except Exception as error:  # noqa: BLE001  (reported to the client as gRPC would)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def _json_value(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist() \
            if array.size else array.tolist()
    return array.tolist()


def _rest_handler(models):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):  # noqa: N802
            try:
                path = self.path.split(":")[0].strip("/").split("/")  # v1 models name [versions v]
                if len(path) < 3 or path[:2] != ["v1", "models"] or \
                        not self.path.endswith(":predict"):
                    raise KeyError(f"Malformed request: POST {self.path}")
                version = int(path[4]) if len(path) >= 5 else None
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                inputs = {key: tf.constant(value) for key, value in body["inputs"].items()}
                outputs = models.predict(path[2], version, body.get("signature_name"), inputs)
                payload = {"outputs": {k: _json_value(v.numpy()) for k, v in outputs.items()}}
                status = 200
            except Exception as error:  # noqa: BLE001
                payload, status = {"error": str(error)}, 400
            data = json.dumps(payload, allow_nan=True).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class StandInModelServer:
    """gRPC and REST on 127.0.0.1 ephemeral ports; ``with`` starts and stops both."""

    def __init__(self, config_file, base_paths: dict):
        self.models = Models(config_file, base_paths)

    def __enter__(self):
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _Servicer(self.models), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.grpc_server.start()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self.models))
        self.rest_port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()
        self.grpc_server.stop(grace=None)
        return False


def is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
