"""Checks of a saved export: the smoke test that gates every export, the exact reference, and
the index report (recall against exact search and latency, measured through the loaded
SavedModel's own signatures)."""

import math
import time

import numpy as np
import tensorflow as tf

REPORT_FILE = "index_report.json"  # in <version>/assets.extra/
# The filtered signatures and the signature each one filters.
FILTERED = {"recommend_filtered": "serving_default", "similar_items_filtered": "similar_items",
            "recommend_for_items_filtered": "recommend_for_items"}


class SmokeTestError(AssertionError):
    """A signature of a freshly saved export returned something wrong."""


def _check(condition, message):
    if not condition:
        raise SmokeTestError(message)


# ---- exact reference --------------------------------------------------------------------------


def exact_scores(queries: np.ndarray, items: np.ndarray, metric: str,
                 block_cells: int = 1 << 24) -> np.ndarray:
    """All-pairs scores in float64, higher is better (``-||q - v||^2`` or ``q.v``).

    The items are widened to float64 a block of about ``block_cells`` values at a time, so a
    wide catalogue (EASE's items have one coordinate per item) costs the [queries, items]
    result and one block, not a float64 copy of every item."""
    q = np.asarray(queries, np.float64)
    items = np.asarray(items)
    n, dim = items.shape
    step = max(1, block_cells // max(dim, 1))
    out = np.empty((len(q), n), np.float64)
    q_norms = (q * q).sum(1)[:, None]
    for lo in range(0, n, step):
        v = np.asarray(items[lo:lo + step], np.float64)
        out[:, lo:lo + step] = q @ v.T
        if metric != "dot_product":
            out[:, lo:lo + step] = -np.maximum(
                q_norms - 2.0 * out[:, lo:lo + step] + (v * v).sum(1)[None, :], 0.0)
    return out


def exact_top_k(queries: np.ndarray, items: np.ndarray, k: int, metric: str,
                exclude=None, include=None,
                chunk_cells: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, positions) best first, ties by lower position, without the
    positions in ``exclude[b]`` (a sequence of index arrays, or None) and, where ``include[b]``
    is not None, among the positions it lists only. Empty slots: NaN, -1."""
    queries = np.asarray(queries, np.float32)
    n = len(items)
    chunk = max(1, chunk_cells // max(n, 1))
    out_scores = np.full((len(queries), k), np.nan)
    out_positions = np.full((len(queries), k), -1, np.int64)
    for lo in range(0, len(queries), chunk):
        scores = exact_scores(queries[lo:lo + chunk], items, metric)
        for b in range(scores.shape[0]):
            if include is not None and include[lo + b] is not None:
                allowed = np.zeros(n, bool)
                allowed[np.asarray(include[lo + b], np.int64)] = True
                scores[b, ~allowed] = -np.inf
            if exclude is not None:
                scores[b, np.asarray(exclude[lo + b], np.int64)] = -np.inf
        width = min(k, n)
        part = np.argpartition(-scores, width - 1, axis=1)[:, :width] if width < n else \
            np.tile(np.arange(n), (scores.shape[0], 1))
        part_scores = np.take_along_axis(scores, part, 1)
        order = np.lexsort((part, -part_scores), axis=1)
        positions = np.take_along_axis(part, order, 1)
        top = np.take_along_axis(scores, positions, 1)
        valid = np.isfinite(top)
        out_scores[lo:lo + chunk, :width] = np.where(valid, top, np.nan)
        out_positions[lo:lo + chunk, :width] = np.where(valid, positions, -1)
    return out_scores, out_positions


def exact_fallback(spec, k: int):
    """What an exact export returns for an unknown id: ``(ids [k], scores [k])`` of the items
    nearest to :meth:`~cml_tf.serving.spec.ExportSpec.fallback_query`."""
    scores, positions = exact_top_k(spec.fallback_query()[None], spec.item_vectors, k,
                                    spec.metric)
    return spec.item_ids[positions[0]], scores[0]


def exact_recommendations(spec, user_rows, k: int):
    """What an exact export's ``serving_default`` returns for known users (row indices)."""
    user_rows = np.asarray(user_rows, np.int64)
    known = spec.known
    exclude = [known.indices[known.indptr[u]:known.indptr[u + 1]] for u in user_rows]
    return exact_top_k(spec.user_vectors[user_rows], spec.item_vectors, k, spec.metric, exclude)


def same_top_k(ids_a, scores_a, ids_b, scores_b, atol: float = 1e-4) -> bool:
    """Two top-k lists agree up to float rounding: equal scores slot by slot (NaN = NaN) and the
    same items wherever scores are not tied within ``atol`` of the cut-off."""
    scores_a, scores_b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if scores_a.shape != scores_b.shape:
        return False
    if not np.allclose(scores_a, scores_b, atol=atol, rtol=0, equal_nan=True):
        return False
    for ra, sa, rb, sb in zip(ids_a, scores_a, ids_b, scores_b):
        finite = np.isfinite(sa)
        if not finite.any():
            continue
        cut = np.nanmin(sa) + atol
        clear_a = {i for i, s in zip(ra, sa) if np.isfinite(s) and s > cut}
        clear_b = {i for i, s in zip(rb, sb) if np.isfinite(s) and s > cut}
        if clear_a != clear_b or not clear_a <= set(rb) or not clear_b <= set(ra):
            return False
    return True


def _descending(scores: np.ndarray) -> bool:
    filled = np.where(np.isnan(scores), -np.inf, scores)
    nan_tail = np.all(np.diff(np.isnan(scores).astype(np.int8), axis=1) >= 0)
    return bool(np.all(filled[:, :-1] >= filled[:, 1:]) and nan_tail)


def _decode(ids) -> np.ndarray:
    return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(np.asarray(ids)) \
        if np.asarray(ids).size else np.asarray(ids, object)


# ---- smoke test -------------------------------------------------------------------------------


def unknown_id(existing) -> str:
    """An id that is not in ``existing``."""
    existing = set(existing)
    candidate = "<unknown id>"
    while candidate in existing:
        candidate += "?"
    return candidate


def signature_names(spec) -> list[str]:
    """The signatures an export of ``spec`` has."""
    names = ["serving_default", "similar_items", "recommend_for_items", *FILTERED]
    return names + (["embed_items"] if spec.item_embedder is not None else [])


def empty_batch_inputs(spec) -> dict:
    """Inputs of a batch of 0 rows for every signature."""
    vector, rows = tf.constant([], tf.string), tf.zeros([0, 3], tf.string)
    inputs = {"serving_default": {"user_id": vector}, "similar_items": {"item_id": vector},
              "recommend_for_items": {"item_ids": rows}, "embed_items": {
                  "feature_ids": rows, "feature_values": tf.zeros([0, 3])}}
    for name, base in FILTERED.items():
        inputs[name] = {**inputs[base], "include_items": rows, "exclude_items": rows}
    return inputs


def smoke_test(loaded, spec, k: int, exact: bool, sample: int = 8) -> dict:
    """Calls every signature of the loaded export on known and unknown ids and on an empty
    batch; raises :class:`SmokeTestError` on the first wrong result. ``exact``: also compares
    ``serving_default`` with :func:`exact_recommendations` (the filtered signatures are compared
    with exact search over their allowed items either way where the result must be exact).
    Returns a summary of what ran."""
    expected = set(signature_names(spec))
    _check(set(loaded.signatures) == expected,
           f"signatures {sorted(loaded.signatures)} != {sorted(expected)}")
    rng = np.random.default_rng(0)
    fallback_ids, fallback_scores = exact_fallback(spec, k)
    missing_user, missing_item = unknown_id(spec.user_ids), unknown_id(spec.item_ids)

    # serving_default
    rows = np.sort(rng.choice(spec.n_users, min(sample, spec.n_users), replace=False))
    users = list(spec.user_ids[rows]) + [missing_user, ""]
    out = loaded.signatures["serving_default"](user_id=tf.constant(users))
    ids, scores, known = (_decode(out["item_ids"].numpy()), out["scores"].numpy(),
                          out["known"].numpy())
    _check(ids.shape == scores.shape == (len(users), k) and scores.dtype == np.float32,
           f"serving_default shapes {ids.shape}, {scores.shape}, dtype {scores.dtype}")
    _check(known.tolist() == [True] * len(rows) + [False, spec.user_ids.tolist().count("") > 0],
           f"serving_default known = {known.tolist()}")
    _check(_descending(scores[known]), "serving_default scores are not descending")
    for b, u in enumerate(rows):
        seen = set(spec.item_ids[spec.known.indices[spec.known.indptr[u]:spec.known.indptr[u + 1]]])
        returned = [i for i in ids[b] if i]
        _check(not seen & set(returned), f"user {spec.user_ids[u]!r} got a training item")
        _check(len(set(returned)) == len(returned), "duplicate items in a result")
        _check(all(bool(i) == np.isfinite(s) for i, s in zip(ids[b], scores[b])),
               "empty slots must have NaN scores and only they")
    if spec.metric == "squared_l2":
        _check(np.all(np.nan_to_num(scores, nan=-1.0) <= 1e-5), "squared_l2 scores must be <= 0")
    _check(_descending(scores[~known]), "fallback scores are not descending")
    fallback = ids[~known]
    _check(all(list(row) == list(fallback[0]) for row in fallback),
           "unknown users must all get the same fallback")
    if exact:
        _check(same_top_k(fallback[:1], scores[~known][:1], fallback_ids[None],
                          fallback_scores[None]),
               "unknown users must get the items nearest to the users' centroid")
    if exact:
        ref_scores, ref_positions = exact_recommendations(spec, rows, k)
        ref_ids = np.where(ref_positions >= 0, spec.item_ids[np.maximum(ref_positions, 0)], "")
        _check(same_top_k(ids[:len(rows)], scores[:len(rows)], ref_ids, ref_scores),
               "serving_default differs from exact search")
    for name, inputs in empty_batch_inputs(spec).items():
        if name in expected:
            empty = loaded.signatures[name](**inputs)
            shapes = {key: tuple(value.shape) for key, value in empty.items()}
            want = ({"embeddings": (0, spec.dim)} if name == "embed_items" else
                    {"item_ids": (0, k), "scores": (0, k), "known": (0,)})
            _check(shapes == want, f"{name} on an empty batch gives {shapes}")

    # similar_items
    items = list(spec.item_ids[rng.choice(spec.n_items, min(4, spec.n_items), replace=False)])
    out = loaded.signatures["similar_items"](item_id=tf.constant(items + [missing_item]))
    ids, known = _decode(out["item_ids"].numpy()), out["known"].numpy()
    _check(ids.shape == (len(items) + 1, k), f"similar_items shape {ids.shape}")
    _check(known.tolist() == [True] * len(items) + [False], "similar_items known flags")
    _check(all(item not in row for item, row in zip(items, ids)),
           "similar_items returned the item itself")
    _check(_descending(out["scores"].numpy()), "similar_items scores not descending")
    _check(list(ids[-1]) == list(fallback[0]), "an unknown item must get the fallback")

    # recommend_for_items
    liked = list(spec.item_ids[rng.choice(spec.n_items, min(3, spec.n_items), replace=False)])
    batch = [[liked[0], liked[-1], ""], ["", "", ""], [missing_item, liked[0], ""]]
    out = loaded.signatures["recommend_for_items"](item_ids=tf.constant(batch))
    ids, known = _decode(out["item_ids"].numpy()), out["known"].numpy()
    _check(ids.shape == (3, k), f"recommend_for_items shape {ids.shape}")
    _check(known.tolist() == [True, False, True], f"recommend_for_items known {known}")
    _check(not set(ids[0]) & {liked[0], liked[-1]} and liked[0] not in set(ids[2]),
           "recommend_for_items returned a given item")
    _check(list(ids[1]) == list(fallback[0]), "an empty item list must get the fallback")

    _smoke_filtered(loaded, spec, k, exact, rng, missing_user, missing_item)
    ran = ["serving_default", "similar_items", "recommend_for_items", *FILTERED]
    if spec.item_embedder is not None:
        names = list(spec.feature_names[:3])
        feature_ids = tf.constant([names + [""], [unknown_id(spec.feature_names), "", "", ""]])
        values = tf.constant([[1.0] * len(names) + [0.0], [1.0, 0.0, 0.0, 0.0]])
        out = loaded.signatures["embed_items"](feature_ids=feature_ids, feature_values=values)
        vectors = out["embeddings"].numpy()
        _check(vectors.shape == (2, spec.dim) and np.all(np.isfinite(vectors)),
               f"embed_items gives shape {vectors.shape}")
        columns = np.arange(len(names))
        sparse = tf.SparseTensor(np.stack([np.zeros_like(columns), columns], 1).astype(np.int64),
                                 np.ones(len(names), np.float32), [1, spec.n_features])
        direct = np.asarray(spec.item_embedder(sparse))
        _check(np.allclose(vectors[:1], direct, atol=1e-5),
               "embed_items differs from the model's own item embedder")
        ran.append("embed_items")
    return {"signatures": ran, "users": len(users), "exact_compared": bool(exact)}


def _known_of(spec, user: int) -> np.ndarray:
    return spec.known.indices[spec.known.indptr[user]:spec.known.indptr[user + 1]]


def _smoke_filtered(loaded, spec, k, exact, rng, missing_user, missing_item):
    """The filtered signatures: an inclusion list (with an unknown id and padding), no
    inclusion list, an inclusion list of an unknown id only, an unknown user; each row checked
    against exact search over its allowed items where that is what it must return."""
    n = spec.n_items
    users = np.sort(rng.choice(spec.n_users, min(2, spec.n_users), replace=False))
    listed = rng.choice(n, min(n, max(3, k // 2)), replace=False)
    dropped = listed[:1]
    ids = spec.item_ids
    rows = [(spec.user_ids[users[0]], list(ids[listed]) + [missing_item, ""], list(ids[dropped])),
            (spec.user_ids[users[-1]], ["", ""], list(ids[dropped])),
            (spec.user_ids[users[0]], [missing_item], []),
            (missing_user, list(ids[listed]), [])]
    width = max(len(r[1]) for r in rows), max(len(r[2]) for r in rows) + 1
    pad = [lambda row, w=w: row + [""] * (w - len(row)) for w in width]
    out = loaded.signatures["recommend_filtered"](
        user_id=tf.constant([r[0] for r in rows]),
        include_items=tf.constant([pad[0](r[1]) for r in rows]),
        exclude_items=tf.constant([pad[1](r[2]) for r in rows]))
    got, scores, known = (_decode(out["item_ids"].numpy()), out["scores"].numpy(),
                          out["known"].numpy())
    _check(got.shape == (4, k) and known.tolist() == [True, True, True, False],
           f"recommend_filtered shape {got.shape}, known {known.tolist()}")
    queries = np.stack([spec.user_vectors[users[0]], spec.user_vectors[users[-1]],
                        spec.user_vectors[users[0]], spec.fallback_query()])
    exclude = [np.union1d(_known_of(spec, users[0]), dropped),
               np.union1d(_known_of(spec, users[-1]), dropped), _known_of(spec, users[0]), []]
    ref_scores, ref_positions = exact_top_k(queries, spec.item_vectors, k, spec.metric, exclude,
                                            include=[listed, None, [], listed])
    ref_ids = np.where(ref_positions >= 0, ids[np.maximum(ref_positions, 0)], "")
    check_rows = [0, 1, 2, 3] if exact else [0, 2, 3]
    _check(same_top_k(got[check_rows], scores[check_rows], ref_ids[check_rows],
                      ref_scores[check_rows]),
           "recommend_filtered differs from exact search over the allowed items")
    allowed = set(ids) - set(ids[exclude[1]])
    _check(set(got[1]) - {""} <= allowed, "recommend_filtered returned an excluded item")

    item = int(listed[0])
    out = loaded.signatures["similar_items_filtered"](
        item_id=tf.constant([ids[item], missing_item]),
        include_items=tf.constant([list(ids[listed])] * 2),
        exclude_items=tf.constant([[""], [""]]))
    got, scores = _decode(out["item_ids"].numpy()), out["scores"].numpy()
    queries = np.stack([spec.item_query(item), spec.fallback_query()])
    ref_scores, ref_positions = exact_top_k(queries, spec.item_vectors, k, spec.metric,
                                            [[item], []], include=[listed, listed])
    ref_ids = np.where(ref_positions >= 0, ids[np.maximum(ref_positions, 0)], "")
    _check(same_top_k(got, scores, ref_ids, ref_scores) and out["known"].numpy().tolist() ==
           [True, False], "similar_items_filtered differs from exact search over its list")

    liked = [ids[listed[0]], ids[listed[-1]]]
    out = loaded.signatures["recommend_for_items_filtered"](
        item_ids=tf.constant([liked]), include_items=tf.constant([list(ids[listed])]),
        exclude_items=tf.constant([[""]]))
    got = _decode(out["item_ids"].numpy())
    _check(not set(got[0]) & set(liked) and set(got[0]) - {""} <= set(ids[listed]),
           "recommend_for_items_filtered returned a given item or one outside its list")


# ---- report -----------------------------------------------------------------------------------


def _recall(found: np.ndarray, reference: np.ndarray, depth: int) -> float:
    values = []
    for f, r in zip(found, reference):
        truth = {i for i in r[:depth] if i}
        if truth:
            values.append(len(truth & set(f[:depth])) / len(truth))
    return float(np.mean(values)) if values else float("nan")


def _percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def index_report(loaded, spec, k: int, rows, latency_queries: int = 200,
                 batch_size: int = 256, seed: int = 0) -> dict:
    """Recall of ``serving_default`` against exact search (exclusions applied to both) on the
    known users ``rows`` (indices), and latency of the loaded signature.

    ``recall@n`` = |top-n of the export ∩ exact top-n| / |exact top-n|, averaged over the sample.
    Latency: ``latency_queries`` single-user calls (after 5 warm-up calls), p50/p99/mean in ms;
    throughput: batches of ``batch_size`` users.
    """
    serve = loaded.signatures["serving_default"]
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows, np.int64)
    found = []
    for lo in range(0, len(rows), batch_size):
        out = serve(user_id=tf.constant(spec.user_ids[rows[lo:lo + batch_size]]))
        found.append(_decode(out["item_ids"].numpy()))
    found = np.concatenate(found) if found else np.zeros((0, k), object)
    _, positions = exact_recommendations(spec, rows, k)
    reference = np.where(positions >= 0, spec.item_ids[np.maximum(positions, 0)], "")
    small = min(10, k)

    latencies = []
    if spec.n_users and latency_queries:
        timed = rows if len(rows) else rng.choice(spec.n_users, min(latency_queries, spec.n_users))
        singles = [tf.constant([spec.user_ids[u]]) for u in timed[:latency_queries]]
        for query in singles[:5]:
            serve(user_id=query)
        for i in range(latency_queries):
            query = singles[i % len(singles)]
            start = time.perf_counter()
            serve(user_id=query)
            latencies.append((time.perf_counter() - start) * 1e3)
        batch = tf.constant(spec.user_ids[rng.choice(spec.n_users, batch_size)])
        serve(user_id=batch)
        repeats = 3
        start = time.perf_counter()
        for _ in range(repeats):
            serve(user_id=batch)
        batch_seconds = (time.perf_counter() - start) / repeats
    report = {
        "sample_users": int(len(rows)),
        f"recall@{small}": _recall(found, reference, small),
        f"recall@{k}": _recall(found, reference, k),
        "recall_small_k": small,
        "latency_ms": {"p50": _percentile(latencies, 50) if latencies else None,
                       "p99": _percentile(latencies, 99) if latencies else None,
                       "mean": float(np.mean(latencies)) if latencies else None,
                       "queries": len(latencies)},
    }
    if latencies:
        report["batch"] = {"size": batch_size,
                           "ms_per_batch": batch_seconds * 1e3,
                           "queries_per_second": batch_size / batch_seconds}
    return report


def format_report(report: dict) -> str:
    """One log line."""
    k = report["k"]
    small = report["recall_small_k"]
    latency = report["latency_ms"]
    recalls = ", ".join(f"recall@{n} {report[f'recall@{n}']:.4f}" for n in sorted({small, k}))
    text = (f"{report['index']} index over {report['n_items']:,} items (k={k}): {recalls} vs "
            f"exact on {report['sample_users']} users")
    if latency["p50"] is not None:
        text += f"; 1 user p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms"
    if "batch" in report:
        batch = report["batch"]
        text += f"; batch {batch['size']}: {batch['queries_per_second']:,.0f} users/s"
    if not math.isfinite(report[f"recall@{k}"]):
        text += " (no user to measure recall on)"
    return text
