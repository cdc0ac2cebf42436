"""Helpers of the export tests (imported by name: pytest puts this folder on sys.path)."""

import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
K = 20

EXPORTS = {
    "brute_force": {"index": "brute_force"},
    "partitioned": {"index": "partitioned"},
    "partitioned_full": {"index": "partitioned",
                         "index_options": {"num_partitions": 12,
                                           "num_partitions_to_search": 10**6}},
    "scann": {"index": "scann", "index_options": {"tree": True, "num_leaves": 12}},
    "scann_default": {"index": "scann"},
}
EXACT = ("brute_force", "partitioned_full", "scann_default")


def run_python(script: str, *args, env_extra=None, timeout=300):
    """A fresh Python process with a minimal environment; returns CompletedProcess."""
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def exact_serving(spec, users, k=K):
    """(ids, scores) of an exact serving_default for the raw user ids (known users only)."""
    from cml_tf.serving.check import exact_recommendations
    rows = spec.user_ids.tolist()
    scores, positions = exact_recommendations(spec, [rows.index(u) for u in users], k)
    ids = np.where(positions >= 0, spec.item_ids[np.maximum(positions, 0)], "")
    return ids, scores


def recall(found, reference):
    values = [len({i for i in r if i} & set(f)) / max(len({i for i in r if i}), 1)
              for f, r in zip(found, reference)]
    return float(np.mean(values))


def item_positions(spec, ids):
    """Sorted catalogue positions of the known ids among ``ids``."""
    where = {item: j for j, item in enumerate(spec.item_ids)}
    return np.array(sorted({where[i] for i in ids if i in where}), np.int64)


def filtered_reference(spec, queries, include, exclude, own, k=K):
    """(ids, scores) of exact top-k per row among ``include[b]`` (no id at all: any item)
    without ``exclude[b]`` (ids) and ``own[b]`` (positions): what a filtered signature of an
    exact export returns."""
    from cml_tf.serving.check import exact_top_k
    allowed = [None if not any(row) else item_positions(spec, row) for row in include]
    dropped = [np.union1d(item_positions(spec, e), o) for e, o in zip(exclude, own)]
    scores, found = exact_top_k(queries, spec.item_vectors, k, spec.metric, dropped, allowed)
    return np.where(found >= 0, spec.item_ids[np.maximum(found, 0)], ""), scores
