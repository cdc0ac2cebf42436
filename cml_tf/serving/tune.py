"""Tuning an approximate index's search depth against exact search, at export time.

How deep an approximate index must search for a given recall depends on the vectors, not only
on the catalogue size: on trained CML vectors (r=100, nearly all on the unit sphere) a k-means
tree partitions far less cleanly than on clustered synthetic data. So an export measures
instead of guessing: on a sample of users it computes the exact ``serving_default`` result
(top-``k`` by the model's metric, the user's training items excluded) and picks the smallest
search depth on a ladder whose recall@k reaches ``target + margin``:

* ScaNN with a tree: ``num_leaves_to_search`` (then, with every leaf searched,
  ``num_reordering_candidates``); once the goal is reached, the smallest of 1/8, 1/4, 1/2 of
  ``num_reordering_candidates`` that still reaches it;
* ScaNN without a tree (asymmetric hashing over every item): ``num_reordering_candidates``;
* Partitioned: ``num_partitions_to_search``, from 1/8 of the default, ~1.15x apart.

The depth is set on the layer before the serving functions are traced, so it is baked into the
SavedModel. The index report then measures the result on *other* users.
"""

import math

import numpy as np

from cml_tf.layers import retrieval
from cml_tf.serving.check import exact_recommendations

MARGIN = 0.005


def _ladder(start: int, stop: int, low: int = 1, first: float = 1 / 4,
            ratio: float = 1.4) -> list[int]:
    """Increasing integers from about ``start * first`` to ``stop``, ~``ratio`` apart."""
    values, value = [], max(low, int(start * first), 1)
    while value < stop:
        values.append(int(value))
        value = max(value + 1, int(math.ceil(value * ratio)))
    values.append(int(stop))
    return sorted(set(v for v in values if low <= v <= stop))


def _served_recall(layer, spec, rows: np.ndarray, exact: np.ndarray, k: int) -> float:
    """recall@k of ``layer`` with exclusions applied as ``serving_default`` does, users batched
    by their number of known items (so each batch asks for about ``k + own count``)."""
    known = spec.known
    counts = np.diff(known.indptr)[rows]
    order = np.argsort(counts, kind="stable")
    found = np.full((len(rows), k), -1, np.int64)
    for chunk in np.array_split(order, max(1, math.ceil(len(rows) / 64))):
        if not len(chunk):
            continue
        width = int(min(k + counts[chunk].max(), spec.n_items))
        _, positions = layer(spec.user_vectors[rows[chunk]], k=width)
        positions = np.asarray(positions)
        for j, r in enumerate(chunk):
            u = rows[r]
            excluded = set(known.indices[known.indptr[u]:known.indptr[u + 1]].tolist())
            kept = [p for p in positions[j].tolist() if p >= 0 and p not in excluded][:k]
            found[r, :len(kept)] = kept
    values = []
    for f, e in zip(found, exact):
        truth = set(e[e >= 0].tolist())
        if truth:
            values.append(len(truth & set(f.tolist())) / len(truth))
    return float(np.mean(values)) if values else 1.0


def tune_index(layer, spec, k: int, rows: np.ndarray, target: float = 0.98,
               margin: float = MARGIN, fixed: tuple = ()) -> dict:
    """Sets the smallest search depth of ``layer`` whose served recall@k on the users ``rows``
    reaches ``min(target + margin, 1)``; returns what was tried and chosen. Exact layers and
    parameters named in ``fixed`` (given by the user) are left alone."""
    if layer.is_exact():
        return {"tuned": False, "reason": "exact index"}
    if not len(rows):
        return {"tuned": False, "reason": "no users to tune on"}
    goal = min(target + margin, 1.0)
    _, exact = exact_recommendations(spec, rows, k)
    n = spec.n_items

    if isinstance(layer, retrieval.ScaNN):
        steps = []
        params = layer.params
        if params["num_leaves"] and "num_leaves_to_search" not in fixed:
            steps += [("num_leaves_to_search", d) for d in
                      _ladder(params["num_leaves_to_search"], params["num_leaves"])]
        if params["num_reordering_candidates"] and "num_reordering_candidates" not in fixed:
            start = params["num_reordering_candidates"]
            if params["num_leaves"]:          # after every leaf: re-order more
                ladder = [r for r in _ladder(start, n) if r > start]
                steps += [("num_reordering_candidates", r) for r in ladder]
            else:
                steps += [("num_reordering_candidates", r) for r in _ladder(start, n, low=k)]

        def apply(name, value):
            if name == "num_reordering_candidates" and params["num_leaves"] and \
                    "num_leaves_to_search" not in fixed:
                params["num_leaves_to_search"] = params["num_leaves"]
            params[name] = int(value)
    elif isinstance(layer, retrieval.Partitioned):
        # A finer ladder: the cost of a query grows with every partition searched.
        steps = [] if "num_partitions_to_search" in fixed else [
            ("num_partitions_to_search", d)
            for d in _ladder(layer.num_partitions_to_search, layer.num_partitions, first=1 / 8,
                             ratio=1.15)]

        def apply(name, value):
            setattr(layer, name, int(value))
    else:
        return {"tuned": False, "reason": f"no tuning for {type(layer).__name__}"}
    if not steps:
        return {"tuned": False, "reason": "search depth given explicitly"}

    tried = []
    for name, value in steps:
        apply(name, value)
        found = _served_recall(layer, spec, rows, exact, k)
        tried.append({name: value, f"recall@{k}": found})
        if found >= goal:
            break
    chosen = {key: value for key, value in tried[-1].items() if "@" not in key}
    recall = tried[-1][f"recall@{k}"]
    if (recall >= goal and isinstance(layer, retrieval.ScaNN) and layer.params["num_leaves"]
            and layer.params["num_reordering_candidates"]
            and "num_reordering_candidates" not in fixed):
        # With a tree, recall is set by the leaves searched; fewer exactly re-ordered
        # candidates often keep it and save time (~0.08 ms per query at 260k items).
        current = layer.params["num_reordering_candidates"]
        for fewer in sorted({max(current // 8, k), max(current // 4, k), max(current // 2, k)}):
            if fewer >= current:
                continue
            layer.params["num_reordering_candidates"] = fewer
            found = _served_recall(layer, spec, rows, exact, k)
            tried.append({"num_reordering_candidates": fewer, f"recall@{k}": found})
            if found >= goal:
                chosen["num_reordering_candidates"], recall = fewer, found
                break
        else:
            layer.params["num_reordering_candidates"] = current
    layer._reset_tf_function_cache()  # pylint: disable=protected-access
    return {"tuned": True, "target": target, "goal": goal, "users": int(len(rows)),
            "chosen": chosen, f"recall@{k}": recall, "reached": recall >= goal, "tried": tried}
