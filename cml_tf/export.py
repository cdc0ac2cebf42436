"""Export a trained model as a versioned TensorFlow SavedModel with serving signatures.

    from cml_tf import export
    result = export.export_model(model, split, "runs/cml/saved_model")       # ScaNN, k=100
    result = export.export_model(model, split, "exports/cml", index="partitioned", k=50)

Layout (what TF Serving's file-system source expects): ``<export_dir>/<version>/`` with
``saved_model.pb``, ``variables/``, ``assets/`` (the id vocabularies) and ``assets.extra/``
(``index_report.json`` and, when ``tensorflow-serving-api`` is installed,
``tf_serving_warmup_requests``). Versions are integers; by default the next free one.

How an export is written:

1. build the top-K index (``scann``, ``partitioned`` or ``brute_force``; see
   :mod:`cml_tf.layers.retrieval`) and the :class:`~cml_tf.serving.module.ServingModule`;
2. ``tf.saved_model.save`` into a hidden temporary folder ``<export_dir>/.tmp-<version>-*``
   (TF Serving ignores names that are not numbers);
3. load it back and smoke-test every signature (:func:`cml_tf.serving.check.smoke_test`), then
   measure the index against exact search (:func:`cml_tf.serving.check.index_report`);
4. only then rename it to ``<export_dir>/<version>``. An existing version is never replaced
   unless ``overwrite=True``; on any failure the temporary folder is removed, so nothing
   half-written is ever visible under a version number.

Temporary folders are named ``.tmp-<version>-<host>-<pid>-<random>`` (and ``.vocab-...``,
``.old-<version>-...``), ``<host>`` a hash of the machine's name and ``<pid>`` the exporting
process: an export killed outright (kill -9, power loss) leaves one behind, and the next export
into the same folder removes it once it sees that no process of that number runs on this
machine. Folders of other names, of other machines and of live processes are left alone; an
``.old-`` folder whose version is missing (a kill in the middle of an overwrite) is moved back.

Every export records a fingerprint of the model's vectors, index and k in its report; the
export at the end of training uses it to recognise its own earlier export (a rerun after a kill
that came after the rename) instead of writing the same model again as the next version.

The signatures, their inputs and outputs and the unknown-id fallback are described in
:mod:`cml_tf.serving.module`; loading needs ``tensorflow`` (and ``import scann`` for a ScaNN
index), never ``cml_tf``. ``export/README.md`` shows serving with TF Serving and from C++.
"""

import datetime
import gc
import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time
import uuid

import numpy as np
import tensorflow as tf
from absl import logging

from cml_tf.data.from_config import load_data
from cml_tf.serving import check, tune
from cml_tf.serving.module import (FALLBACK, INDEXES, ServingModule, build_index, given,
                                   index_parameters)
from cml_tf.serving.spec import ExportSpec, spec_from_model

__all__ = ["ExportError", "ExportSpec", "add_new_items", "export", "export_model",
           "export_from_training", "export_workdir", "restore_model", "spec_from_model",
           "next_version", "INDEXES", "remove_stale_temporaries", "model_fingerprint",
           "find_export"]

WARMUP_FILE = "tf_serving_warmup_requests"


class ExportError(RuntimeError):
    """The export could not be written (existing version, failed smoke test, ...)."""


def next_version(export_dir) -> int:
    """1 + the largest numeric version under ``export_dir`` (1 when there is none)."""
    path = pathlib.Path(export_dir)
    versions = [int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()] \
        if path.is_dir() else []
    return max(versions, default=0) + 1


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"\.(tmp|old|vocab)-(?:(\d+)-)?([0-9a-f]{8})-(\d+)-")


def _owned(kind: str, version=None) -> str:
    """The name prefix of a temporary folder of this process."""
    return f".{kind}-" + (f"{version}-" if version is not None else "") + f"{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(export_dir) -> list:
    """Removes the temporary folders of dead exports on this machine (module docstring);
    returns what it removed or moved back."""
    done = []
    for path in pathlib.Path(export_dir).iterdir():
        match = _TEMPORARY.match(path.name)
        if not match or not path.is_dir() or match.group(3) != _HOST \
                or _alive(int(match.group(4))):
            continue
        kind, version = match.group(1), match.group(2)
        target = path.with_name(version or "")
        if kind == "old" and version and not target.exists():
            os.rename(path, target)
            logging.warning("moved %s back to %s (an overwrite was interrupted)", path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)
            logging.warning("removed %s, left behind by an interrupted export", path)
        done.append(path.name)
    return done


def model_fingerprint(spec: ExportSpec, index: str, k: int) -> str:
    """sha256 of the vectors, the metric, the index and k: equal for the same model's export."""
    digest = hashlib.sha256(f"{spec.metric}:{index}:{k}:".encode())
    for vectors in (spec.user_vectors, spec.item_vectors):
        digest.update(np.ascontiguousarray(vectors, np.float32).tobytes())
    return digest.hexdigest()


def find_export(export_dir, fingerprint: str):
    """The version folder under ``export_dir`` whose report has ``fingerprint`` (or None)."""
    path = pathlib.Path(export_dir)
    if not path.is_dir():
        return None
    for version in sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()),
                          key=lambda p: int(p.name)):
        report = version / "assets.extra" / check.REPORT_FILE
        try:
            if json.loads(report.read_text()).get("model_fingerprint") == fingerprint:
                return version
        except (OSError, ValueError):
            continue
    return None


def _size_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_warmup(path: pathlib.Path, user_ids) -> bool:
    """TF Serving warm-up requests (``assets.extra/tf_serving_warmup_requests``): a few
    ``serving_default`` calls that the model server replays at load time, so the first real
    request does not pay for building the index's searcher. Needs ``tensorflow-serving-api``."""
    try:
        from tensorflow_serving.apis import (  # pylint: disable=import-outside-toplevel
            predict_pb2,
            prediction_log_pb2,
        )
    except ImportError:
        return False
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in ([user_ids[0]], list(user_ids[:8])):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = "serving_default"
            request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(
                [u.encode("utf-8") for u in batch], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return True


def export(spec: ExportSpec, export_dir, index: str = "scann", k: int = 100,
           version: int | None = None, overwrite: bool = False, index_options: dict | None = None,
           recall_target: float | None = 0.98, tune_users: int = 500, report_users: int = 1000,
           report_queries: int = 200, warmup: bool = True, seed: int = 0) -> dict:
    """Writes ``spec`` as SavedModel version ``version`` (default: the next free one) of
    ``export_dir``; returns a summary (path, version, index, sizes, the index report).

    Args:
      spec: what to export (:func:`~cml_tf.serving.spec.spec_from_model`).
      export_dir: the model's base folder (TF Serving's ``base_path``).
      index: ``"scann"`` (needs ScaNN's ops to load), ``"partitioned"`` or ``"brute_force"``
        (stock TensorFlow ops only).
      k: results per query, fixed in the signatures; at most the number of items.
      version: integer version folder; an existing one is refused unless ``overwrite``.
      index_options: constructor arguments of the retrieval layer, e.g.
        ``{"num_leaves": 500}`` for ScaNN or ``{"num_partitions_to_search": 40}``.
      recall_target: an approximate index's search depth is tuned on ``tune_users`` users
        until its recall@k against exact search (training items excluded, as served) reaches
        this (:mod:`cml_tf.serving.tune`); ``None``: the layer's defaults as they are. A depth
        given in ``index_options`` is kept.
      report_users, report_queries: sample size of the recall measurement (other users than
        the tuning sample, when there are enough) and number of timed single-user calls in the
        index report.
      warmup: write TF Serving warm-up requests (when ``tensorflow-serving-api`` is installed).
      seed: of the user samples.
    """
    if index not in INDEXES:
        raise ValueError(f"index must be one of {INDEXES}, got {index!r}")
    if not 1 <= int(k) <= spec.n_items:
        raise ValueError(f"k={k} must be between 1 and the number of items ({spec.n_items})")
    k = int(k)
    export_dir = pathlib.Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(export_dir)
    version = next_version(export_dir) if not version else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    target = export_dir / str(version)
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; choose another version or pass "
                          "overwrite=True (--overwrite)")

    start = time.time()
    tmp = export_dir / f"{_owned('tmp', version)}{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory(prefix=_owned("vocab"), dir=export_dir) \
                as vocabulary_dir:
            build_start = time.time()
            layer = build_index(index, spec.item_vectors, k, spec.metric, index_options)
            build_seconds = time.time() - build_start
            order = np.random.default_rng(seed).permutation(spec.n_users)
            tune_rows = np.sort(order[:tune_users])
            report_rows = order[tune_users:tune_users + report_users]
            if len(report_rows) < min(report_users, spec.n_users):  # few users: reuse them
                report_rows = order[:report_users]
            tuning = {"tuned": False, "reason": "no recall target"}
            if recall_target is not None:
                tune_start = time.time()
                fixed = tuple(key for key, value in (index_options or {}).items()
                              if given(value))
                tuning = tune.tune_index(layer, spec, k, tune_rows, recall_target, fixed=fixed)
                tuning["seconds"] = time.time() - tune_start
            module = ServingModule(spec, layer, k, vocabulary_dir)
            tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        exact, parameters = bool(layer.is_exact()), index_parameters(layer)
        del module, layer  # the copy loaded below takes their memory (gc: Keras' cycles)
        gc.collect()
        loaded = tf.saved_model.load(str(tmp))
        smoke = check.smoke_test(loaded, spec, k, exact=exact)
        report = {"index": index, "index_parameters": parameters,
                  "exact": exact, "k": k, "metric": spec.metric,
                  "model": spec.model_name, "n_users": spec.n_users, "n_items": spec.n_items,
                  "model_fingerprint": model_fingerprint(spec, index, k),
                  "dim": spec.dim, "new_items": spec.new_items,
                  "index_build_seconds": build_seconds,
                  "tuning": tuning, "signatures": smoke["signatures"],
                  "unknown_id_fallback": FALLBACK,
                  **check.index_report(loaded, spec, k, np.sort(report_rows),
                                       latency_queries=report_queries, seed=seed),
                  "tensorflow": tf.__version__,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec="seconds")}
        if index == "scann":
            report["scann"] = importlib.metadata.version("scann")
        del loaded
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / check.REPORT_FILE).write_text(json.dumps(report, indent=2, allow_nan=True))
        has_warmup = warmup and _write_warmup(extra / WARMUP_FILE, spec.user_ids[:8].tolist())
        _move_into_place(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = _size_bytes(target)
    logging.info("exported %s (%.1f MB) in %.1fs: %s", target, size / 2**20,
                 time.time() - start, check.format_report(report))
    return {"path": str(target), "version": version, "index": index, "k": k,
            "size_bytes": size, "seconds": time.time() - start,
            "warmup_requests": bool(has_warmup), "report": report}


def _move_into_place(tmp: pathlib.Path, target: pathlib.Path, overwrite: bool):
    if not target.exists():
        os.rename(tmp, target)
        return
    if not overwrite:  # appeared while we were exporting
        raise ExportError(f"{target} already exists")
    old = target.with_name(f"{_owned('old', target.name)}{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_model(model, split, export_dir, **kwargs) -> dict:
    """:func:`export` of a trained model and the Split it was trained on."""
    return export(spec_from_model(model, split), export_dir, **kwargs)


def _options(export_config, index: str) -> dict:
    section = export_config.get(index) if hasattr(export_config, "get") else None
    return dict(section.to_dict() if hasattr(section, "to_dict") else section or {})


def export_from_training(model, split, config, workdir) -> dict:
    """The export at the end of ``train_and_evaluate``: ``<workdir>/saved_model/<version>/``
    with the config's ``export`` section; returns what goes into metrics.json."""
    cfg = config.export
    export_dir = pathlib.Path(workdir) / "saved_model"
    spec = spec_from_model(model, split)
    existing = find_export(export_dir, model_fingerprint(spec, cfg.index, cfg.k))
    if existing is not None:  # this run was exported before it was interrupted
        logging.info("%s already holds this model's export; not exporting it again", existing)
        report = json.loads((existing / "assets.extra" / check.REPORT_FILE).read_text())
        return {**_summary({"path": str(existing), "version": int(existing.name),
                            "index": report["index"], "k": report["k"], "seconds": 0.0,
                            "size_bytes": _size_bytes(existing), "report": report}),
                "reused": True}
    result = export(
        spec, export_dir, index=cfg.index, k=cfg.k,
        version=cfg.get("version", 0) or None, overwrite=cfg.get("overwrite", False),
        index_options=_options(cfg, cfg.index),
        recall_target=cfg.get("recall_target", 0.98) or None,
        tune_users=cfg.get("tune_users", 500), report_users=cfg.get("report_users", 1000),
        report_queries=cfg.get("report_queries", 200), seed=config.get("seed", 0))
    return _summary(result)


def _summary(result: dict) -> dict:
    report = result["report"]
    small = report["recall_small_k"]
    return {"path": result["path"], "version": result["version"], "index": result["index"],
            "k": result["k"], "size_bytes": result["size_bytes"], "seconds": result["seconds"],
            "index_parameters": report["index_parameters"],
            f"recall@{small}": report[f"recall@{small}"],
            f"recall@{result['k']}": report[f"recall@{result['k']}"],
            "latency_ms_p50": report["latency_ms"]["p50"],
            "latency_ms_p99": report["latency_ms"]["p99"]}


# ---- a trained workdir ------------------------------------------------------------------------


def restore_model(workdir, checkpoint: str = "auto"):
    """(model, split, config) of a training workdir: the config from ``config.json``, the data
    through ``cml_tf.data.from_config.load_data``, the weights from ``checkpoints/best/weights``
    (``checkpoint="best"``), the last epoch checkpoint (``"latest"``), or the best when it
    exists and else the latest (``"auto"``, what the training command itself exports)."""
    import ml_collections  # pylint: disable=import-outside-toplevel

    from cml_tf.models import build_model  # pylint: disable=import-outside-toplevel

    workdir = pathlib.Path(workdir)
    config_file = workdir / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found: is {workdir} a training workdir?")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    split = load_data(config.data)
    model = build_model(config.model, split.train, seed=config.seed,
                        jit_sampling=config.train.get("jit_sampling", True))
    best = workdir / "checkpoints" / "best" / "weights"
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    if checkpoint not in ("auto", "best", "latest"):
        raise ValueError(f"checkpoint must be 'auto', 'best' or 'latest', got {checkpoint!r}")
    use_best = checkpoint == "best" or (checkpoint == "auto" and
                                        pathlib.Path(str(best) + ".index").exists())
    if use_best:
        if not pathlib.Path(str(best) + ".index").exists():
            raise FileNotFoundError(f"no best weights at {best}")
        model.load_weights(str(best)).expect_partial()
        logging.info("restored %s", best)
    else:
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
        tf.train.Checkpoint(model=model).restore(latest).expect_partial()
        logging.info("restored %s", latest)
    return model, split, config


def add_new_items(spec: ExportSpec, path) -> ExportSpec:
    """``spec`` with the items of a feature table (:func:`cml_tf.data.features
    .read_item_features`: columns ``item``, ``feature``, optional ``value``) appended, each
    embedded by the model's feature prior f(x): cold-start items that every signature can
    return, without retraining."""
    from cml_tf.data.features import \
        read_item_features  # pylint: disable=import-outside-toplevel

    if spec.item_embedder is None:
        raise ValueError("--new_items needs a model with item features (CML+F): this one has "
                         "no feature prior to embed them with")
    ids, features = read_item_features(path, spec.feature_names)
    spec = spec.with_items(ids, spec.embed(features))
    logging.info("added %d new items from %s, embedded with the feature prior", len(ids), path)
    return spec


def export_workdir(workdir, index: str | None = None, k: int | None = None,
                   export_dir=None, checkpoint: str = "auto", new_items=None, **kwargs) -> dict:
    """Exports a trained workdir (what ``export/export.py`` runs): index and k default to the
    workdir's config (``export.index``, ``export.k``), the folder to
    ``<workdir>/saved_model``. ``new_items``: a feature table of items to add to the
    catalogue (:func:`add_new_items`)."""
    model, split, config = restore_model(workdir, checkpoint)
    cfg = config.get("export") or {}
    index = index or cfg.get("index", "scann")
    k = k or cfg.get("k", 100)
    kwargs.setdefault("index_options", _options(cfg, index) if cfg else None)
    if cfg and "recall_target" in cfg:
        kwargs.setdefault("recall_target", cfg["recall_target"] or None)
    export_dir = export_dir or pathlib.Path(workdir) / "saved_model"
    spec = spec_from_model(model, split)
    if new_items:
        spec = add_new_items(spec, new_items)
    return export(spec, export_dir, index=index, k=k, **kwargs)

