"""The export: layout and versions, the temporary-folder-and-rename, every signature's results
against numpy, exclusions, the unknown-id fallback, odd batches, concurrency, tuning."""

import json
import threading

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from export_helpers import EXACT, K, exact_serving, recall

from cml_tf import export
from cml_tf.serving import ExportSpec, check
from cml_tf.serving.check import exact_top_k


@pytest.fixture(scope="module")
def loaded(exports):
    return {label: tf.saved_model.load(str(path)) for label, (path, _) in exports.items()}


def decode(tensor):
    return np.array([[b.decode() for b in row] for row in tensor.numpy()], dtype=object)


def serve(model, users):
    out = model.signatures["serving_default"](user_id=tf.constant(users, tf.string))
    return decode(out["item_ids"]), out["scores"].numpy(), out["known"].numpy()


def known_items(spec, user):
    u = spec.user_ids.tolist().index(user)
    return set(spec.item_ids[spec.known.indices[spec.known.indptr[u]:spec.known.indptr[u + 1]]])


def toy_spec(metric="squared_l2", n_users=40, n_items=60, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, dim)).astype(np.float32) / 2
    items = rng.normal(size=(n_items, dim)).astype(np.float32) / 2
    known = sp.random(n_users, n_items, density=0.1, random_state=seed, format="csr")
    return ExportSpec([f"user {i}" for i in range(n_users)], [f"item-{i}" for i in range(n_items)],
                      users, items, metric, known)


# ---- layout, versions, temporary folder -------------------------------------------------------


def test_layout_and_report(exports):
    for label, (path, result) in exports.items():
        assert path.name == "1" and result["version"] == 1
        for name in ("saved_model.pb", "variables/variables.index", "assets/user_ids.txt",
                     "assets/item_ids.txt", "assets/feature_ids.txt",
                     "assets.extra/index_report.json",
                     "assets.extra/tf_serving_warmup_requests"):
            assert (path / name).exists(), (label, name)
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
        report = json.loads((path / "assets.extra" / "index_report.json").read_text())
        assert report["index"] == result["index"] and report["k"] == K
        assert report["signatures"] == ["serving_default", "similar_items",
                                        "recommend_for_items", "recommend_filtered",
                                        "similar_items_filtered",
                                        "recommend_for_items_filtered", "embed_items"]
        assert report["sample_users"] > 0 and report["latency_ms"]["p50"] > 0
        assert "centroid" in report["unknown_id_fallback"]
        if label in EXACT:
            assert report["exact"] and report["recall@10"] == report[f"recall@{K}"] == 1.0
        assert result["size_bytes"] > 0


def test_scann_default_is_brute_force_at_this_size_and_forced_tree_is_tuned(exports):
    assert exports["scann_default"][1]["report"]["index_parameters"]["brute_force"]
    report = exports["scann"][1]["report"]
    assert report["index_parameters"]["num_leaves"] == 12 and not report["exact"]
    assert report["tuning"]["tuned"] and report["tuning"]["reached"]
    assert report[f"recall@{K}"] >= 0.95
    partitioned = exports["partitioned"][1]["report"]
    assert partitioned["tuning"]["tuned"] and partitioned[f"recall@{K}"] >= 0.95
    assert exports["partitioned_full"][1]["report"]["tuning"] == {
        "tuned": False, "reason": "exact index", "seconds": pytest.approx(0, abs=5)}


def test_versions_are_never_overwritten_unless_asked(tmp_path):
    spec = toy_spec()
    first = export.export(spec, tmp_path, index="brute_force", k=5, report_users=10,
                          report_queries=2)
    second = export.export(spec, tmp_path, index="brute_force", k=5, report_users=10,
                           report_queries=2)
    assert (first["version"], second["version"]) == (1, 2)
    assert export.next_version(tmp_path) == 3
    with pytest.raises(export.ExportError, match="already exists"):
        export.export(spec, tmp_path, index="brute_force", k=5, version=2)
    replaced = export.export(spec, tmp_path, index="partitioned", k=7, version=2, overwrite=True,
                             report_users=10, report_queries=2)
    report = json.loads((tmp_path / "2" / "assets.extra" / "index_report.json").read_text())
    assert replaced["path"] == str(tmp_path / "2") and report["index"] == "partitioned"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]   # no leftovers


def test_failed_smoke_test_leaves_nothing_half_written(tmp_path, monkeypatch):
    spec = toy_spec()
    export.export(spec, tmp_path, index="brute_force", k=5, report_users=10, report_queries=2)
    before = (tmp_path / "1" / "saved_model.pb").read_bytes()
    saved = {}

    def failing_smoke_test(loaded, *args, **kwargs):
        saved["signatures"] = sorted(loaded.signatures)   # the model was written and loaded
        raise check.SmokeTestError("forced failure")

    monkeypatch.setattr(check, "smoke_test", failing_smoke_test)
    with pytest.raises(check.SmokeTestError, match="forced failure"):
        export.export(spec, tmp_path, index="brute_force", k=5)          # would be version 2
    with pytest.raises(check.SmokeTestError):
        export.export(spec, tmp_path, index="scann", k=5, version=1, overwrite=True)
    assert saved["signatures"] == ["recommend_filtered", "recommend_for_items",
                                   "recommend_for_items_filtered", "serving_default",
                                   "similar_items", "similar_items_filtered"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    assert (tmp_path / "1" / "saved_model.pb").read_bytes() == before


def test_a_real_smoke_test_failure_is_caught(tmp_path, monkeypatch):
    """A module whose exclusions are broken does not get past the smoke test."""
    from cml_tf.serving import module

    monkeypatch.setattr(module.ServingModule, "_is_known",
                        lambda self, rows, positions: tf.zeros_like(positions, tf.bool))
    with pytest.raises(check.SmokeTestError, match="training item"):
        export.export(toy_spec(), tmp_path, index="brute_force", k=5)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    spec = toy_spec()
    with pytest.raises(ValueError, match="index"):
        export.export(spec, tmp_path, index="annoy")
    with pytest.raises(ValueError, match="k=61"):
        export.export(spec, tmp_path, k=61)
    with pytest.raises(ValueError, match="not unique"):
        ExportSpec(["a", "a"], ["x"], np.zeros((2, 2)), np.zeros((1, 2)), "squared_l2",
                   sp.csr_matrix((2, 1)))
    with pytest.raises(ValueError, match="line breaks"):
        ExportSpec(["a\nb"], ["x"], np.zeros((1, 2)), np.zeros((1, 2)), "squared_l2",
                   sp.csr_matrix((1, 1)))
    with pytest.raises(ValueError, match="metric"):
        ExportSpec(["a"], ["x"], np.zeros((1, 2)), np.zeros((1, 2)), "cosine",
                   sp.csr_matrix((1, 1)))
    with pytest.raises(ValueError, match="NaN"):
        ExportSpec(["a"], ["x"], np.full((1, 2), np.nan), np.zeros((1, 2)), "squared_l2",
                   sp.csr_matrix((1, 1)))
    assert list(tmp_path.iterdir()) == []


# ---- serving_default --------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["brute_force", "partitioned_full", "scann_default"])
def test_exact_exports_equal_the_in_process_model(label, trained, loaded):
    model, split, spec = trained
    users = spec.user_ids.tolist()
    ids, scores, known = serve(loaded[label], users)
    assert known.all()
    ref_ids, ref_scores = exact_serving(spec, users)
    assert check.same_top_k(ids, scores, ref_ids, ref_scores, atol=1e-5)
    # ... and the model's own recommend(), whose exclusions are the training positives only:
    # where validation items are excluded too, the lists agree on what is left.
    model_scores, model_items = model.recommend(np.arange(len(users)), k=K)
    model_ids = spec.item_ids[model_items.numpy()]
    valid = split.valid.matrix.tolil().rows
    for row, (got, want) in enumerate(zip(ids, model_ids)):
        shown = [i for i in want if i not in set(spec.item_ids[valid[row]])]
        assert list(got[:len(shown)]) == shown or check.same_top_k(
            [got[:len(shown)]], [scores[row, :len(shown)]], [shown],
            [model_scores.numpy()[row][[list(want).index(i) for i in shown]]], atol=1e-5)


@pytest.mark.parametrize("label", ["brute_force", "partitioned", "scann"])
def test_no_training_item_is_ever_returned(label, trained, loaded):
    _, _, spec = trained
    users = spec.user_ids.tolist()
    ids, scores, known = serve(loaded[label], users)
    for user, row, row_scores in zip(users, ids, scores):
        assert not known_items(spec, user) & set(row)
        assert len(set(row) - {""}) == sum(1 for i in row if i)      # no duplicates
        filled = np.where(np.isnan(row_scores), -np.inf, row_scores)
        assert np.all(filled[:-1] >= filled[1:]) and np.all(row_scores[~np.isnan(row_scores)] <= 0)
    if label != "brute_force":
        ref_ids, _ = exact_serving(spec, users)
        assert recall(ids, ref_ids) >= 0.95


def test_unknown_users_get_the_items_nearest_the_users_centroid(trained, loaded):
    _, _, spec = trained
    centroid = spec.user_vectors.mean(axis=0)
    centroid /= max(np.linalg.norm(centroid), 1.0)
    np.testing.assert_allclose(spec.fallback_query(), centroid, atol=1e-6)
    expected_ids, expected_scores = check.exact_fallback(spec, K)
    np.testing.assert_allclose(expected_scores,
                               -np.sort(((spec.item_vectors - centroid) ** 2).sum(1))[:K],
                               atol=1e-5)
    for label in ("brute_force", "scann"):
        ids, scores, known = serve(loaded[label], ["nobody", "", spec.user_ids[0], "nobody"])
        assert known.tolist() == [False, False, True, False]
        for row in (0, 1, 3):
            assert list(ids[row]) == list(ids[0])
            assert np.all(np.diff(scores[row]) <= 0) and np.all(scores[row] <= 0)
        if label == "brute_force":
            assert check.same_top_k(ids[:1], scores[:1], expected_ids[None],
                                    expected_scores[None], atol=1e-5)
        else:
            assert recall(ids[:1], expected_ids[None]) >= 0.95


@pytest.mark.parametrize("label", ["brute_force", "partitioned", "scann"])
def test_odd_batches(label, trained, loaded):
    _, _, spec = trained
    model = loaded[label]
    ids, scores, known = serve(model, [])
    assert ids.shape == (0,) or ids.size == 0
    out = model.signatures["serving_default"](user_id=tf.constant([], tf.string))
    assert out["item_ids"].shape == (0, K) and out["scores"].shape == (0, K)
    assert out["known"].shape == (0,)
    one_ids, one_scores, _ = serve(model, [spec.user_ids[5]])
    assert one_ids.shape == (1, K)
    rng = np.random.default_rng(1)
    pool = np.concatenate([spec.user_ids, ["", "ghost", spec.user_ids[5]]])
    batch = pool[rng.integers(len(pool), size=10_000)].tolist()
    big_ids, big_scores, big_known = serve(model, batch)
    assert big_ids.shape == big_scores.shape == (10_000, K)
    assert big_known.tolist() == [u in set(spec.user_ids) for u in batch]
    # Duplicates give identical rows, and a row does not depend on the rest of the batch.
    first = {}
    for user, row in zip(batch, big_ids):
        first.setdefault(user, list(row))
        assert first[user] == list(row)
    assert first[spec.user_ids[5]] == list(one_ids[0])


# ---- other signatures -------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["brute_force", "scann"])
def test_similar_items(label, trained, loaded):
    _, _, spec = trained
    items = spec.item_ids.tolist()
    out = loaded[label].signatures["similar_items"](item_id=tf.constant(items + ["no such"]))
    ids, scores, known = decode(out["item_ids"]), out["scores"].numpy(), out["known"].numpy()
    assert known.tolist() == [True] * len(items) + [False]
    assert all(item not in row for item, row in zip(items, ids))
    exclude = [[j] for j in range(len(items))]
    ref_scores, ref_pos = exact_top_k(spec.item_vectors, spec.item_vectors, K, spec.metric,
                                      exclude)
    ref_ids = spec.item_ids[ref_pos]
    if label == "brute_force":
        assert check.same_top_k(ids[:-1], scores[:-1], ref_ids, ref_scores, atol=1e-5)
    else:
        assert recall(ids[:-1], ref_ids) >= 0.95
    assert list(ids[-1]) == list(serve(loaded[label], ["nobody"])[0][0])  # the fallback


def test_recommend_for_items_uses_the_censored_mean(trained, loaded):
    _, _, spec = trained
    lists = [["i3", "i7", ""], ["i3", "i3", "i9"], ["", "", ""], ["nope", "i11", ""],
             ["i100", "nope", "i200"]]
    out = loaded["brute_force"].signatures["recommend_for_items"](item_ids=tf.constant(lists))
    ids, scores, known = decode(out["item_ids"]), out["scores"].numpy(), out["known"].numpy()
    assert known.tolist() == [True, True, False, True, True]
    position = {item: j for j, item in enumerate(spec.item_ids)}
    for row, items in enumerate(lists):
        given = [position[i] for i in items if i in position]
        if not given:
            assert list(ids[row]) == list(serve(loaded["brute_force"], ["nobody"])[0][0])
            continue
        mean = spec.item_vectors[given].mean(axis=0)
        mean = mean / max(np.linalg.norm(mean), 1.0)
        ref_scores, ref_pos = exact_top_k(mean[None], spec.item_vectors, K, spec.metric,
                                          [sorted(set(given))])
        assert not set(ids[row]) & set(items)
        assert check.same_top_k(ids[row:row + 1], scores[row:row + 1], spec.item_ids[ref_pos],
                                ref_scores, atol=1e-5)


def test_recommend_for_items_with_no_columns(loaded):
    out = loaded["scann"].signatures["recommend_for_items"](
        item_ids=tf.zeros([2, 0], tf.string))
    assert out["item_ids"].shape == (2, K) and not out["known"].numpy().any()


def test_embed_items_matches_the_model(trained, loaded):
    model, split, spec = trained
    names = split.train.feature_names
    rows = [[names[0], names[3], "unknown tag", ""], [names[5], "", "", ""], ["", "", "", ""]]
    values = [[1.0, 1.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    out = loaded["partitioned"].signatures["embed_items"](
        feature_ids=tf.constant(rows), feature_values=tf.constant(values))["embeddings"].numpy()
    sparse = tf.SparseTensor([[0, 0], [0, 3], [1, 5]], [1.0, 1.0, 2.0], [3, len(names)])
    np.testing.assert_allclose(out, model.embed_items(sparse).numpy(), atol=1e-5)
    # The features of a training item land near that item's own vector region.
    features = split.train.item_features
    item = int(np.argmax(np.diff(features.indptr)))
    cols = features.indices[features.indptr[item]:features.indptr[item + 1]]
    got = loaded["partitioned"].signatures["embed_items"](
        feature_ids=tf.constant([list(names[cols])]),
        feature_values=tf.constant([features.data[features.indptr[item]:
                                                  features.indptr[item + 1]].tolist()]))
    direct = model.embed_items(tf.SparseTensor(
        np.stack([np.zeros_like(cols), cols], 1).astype(np.int64),
        features.data[features.indptr[item]:features.indptr[item + 1]], [1, len(names)]))
    np.testing.assert_allclose(got["embeddings"].numpy(), direct.numpy(), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded["partitioned"].signatures["embed_items"](
            feature_ids=tf.constant([["a", "b"]]), feature_values=tf.constant([[1.0]]))


def test_models_without_features_have_no_embed_items(tmp_path):
    result = export.export(toy_spec(), tmp_path, index="scann", k=5, report_users=5)
    assert "embed_items" not in result["report"]["signatures"]


def test_dot_product_models(tmp_path):
    """The interface the matrix-factorisation baselines will export through."""
    spec = toy_spec("dot_product")
    result = export.export(spec, tmp_path, index="brute_force", k=6, report_users=40)
    assert result["report"]["recall@6"] == 1.0
    model = tf.saved_model.load(result["path"])
    ids, scores, _ = serve(model, ["user 3"])
    ref_scores, ref_pos = check.exact_recommendations(spec, [3], 6)
    assert check.same_top_k(ids, scores, spec.item_ids[ref_pos], ref_scores, atol=1e-5)
    np.testing.assert_allclose(scores[0], spec.user_vectors[3] @ spec.item_vectors[ref_pos[0]].T,
                               rtol=1e-5)
    out = model.signatures["recommend_for_items"](item_ids=tf.constant([["item-1", "item-2"]]))
    mean = spec.item_vectors[[1, 2]].mean(0)           # plain mean, not censored
    ref_scores, ref_pos = exact_top_k(mean[None], spec.item_vectors, 6, "dot_product", [[1, 2]])
    assert decode(out["item_ids"]).tolist() == spec.item_ids[ref_pos].tolist()
    np.testing.assert_allclose(out["scores"].numpy(), ref_scores, rtol=1e-5)


def test_exclusions_leaving_fewer_than_k_items_are_padded(tmp_path):
    spec = toy_spec(n_users=3, n_items=8)
    spec = ExportSpec(spec.user_ids, spec.item_ids, spec.user_vectors, spec.item_vectors,
                      spec.metric, sp.csr_matrix(np.array([[1] * 6 + [0] * 2, [0] * 8,
                                                           [1] * 8], np.float32)))
    for index in ("brute_force", "partitioned", "scann"):
        result = export.export(spec, tmp_path / index, index=index, k=4, report_users=3)
        ids, scores, known = serve(tf.saved_model.load(result["path"]), list(spec.user_ids))
        assert known.all()
        assert sorted(i for i in ids[0] if i) == ["item-6", "item-7"]
        assert np.isnan(scores[0, 2:]).all() and list(ids[0, 2:]) == ["", ""]
        assert (ids[1] != "").all() and (ids[2] == "").all() and np.isnan(scores[2]).all()


# ---- concurrency ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("label", ["scann", "partitioned"])
def test_concurrent_requests(label, trained, loaded):
    """8 threads x 2,000 requests on one loaded model: no error, results as sequential."""
    _, _, spec = trained
    signature = loaded[label].signatures["serving_default"]
    pool = list(spec.user_ids[:50]) + ["ghost"]
    queries = [tf.constant([pool[i % len(pool)]]) for i in range(len(pool))]
    expected = [signature(user_id=q)["item_ids"].numpy().tolist() for q in queries]
    errors, mismatches = [], []

    def worker(offset):
        try:
            for i in range(2000):
                j = (offset + i) % len(queries)
                got = signature(user_id=queries[j])["item_ids"].numpy().tolist()
                if got != expected[j]:
                    mismatches.append(j)
        except Exception as error:  # noqa: BLE001  (counted, not raised, in a thread)
            errors.append(repr(error))

    threads = [threading.Thread(target=worker, args=(t * 7,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and mismatches == []


# ---- the training command ---------------------------------------------------------------------


def test_tuning_reaches_the_target_on_a_hard_index(trained, tmp_path):
    _, _, spec = trained
    result = export.export(spec, tmp_path, index="partitioned", k=K, recall_target=0.99,
                           index_options={"num_partitions": 30}, tune_users=150,
                           report_users=150)
    tuning = result["report"]["tuning"]
    assert tuning["tuned"] and tuning["reached"] and tuning["goal"] == pytest.approx(0.995)
    searched = result["report"]["index_parameters"]["num_partitions_to_search"]
    assert searched == tuning["chosen"]["num_partitions_to_search"]
    assert [t[f"recall@{K}"] for t in tuning["tried"]][-1] >= 0.995
    untuned = export.export(spec, tmp_path, index="partitioned", k=K, recall_target=None,
                            index_options={"num_partitions": 30, "num_partitions_to_search": 1},
                            report_users=150)
    assert untuned["report"]["tuning"]["tuned"] is False
    assert untuned["report"]["index_parameters"]["num_partitions_to_search"] == 1
    assert untuned["report"][f"recall@{K}"] < result["report"][f"recall@{K}"]


def test_unicode_and_odd_ids_round_trip(tmp_path):
    base = toy_spec(n_users=4, n_items=6)
    users = ["café", "ユーザー 2", "tab\there", " spaced "]
    items = ["élément", "項目", "a,b", "x\ty", "#1", "'quoted'"]
    spec = ExportSpec(users, items, base.user_vectors, base.item_vectors, base.metric,
                      sp.csr_matrix(np.eye(4, 6, dtype=np.float32)))
    result = export.export(spec, tmp_path, index="brute_force", k=3, report_users=4)
    model = tf.saved_model.load(result["path"])
    ids, scores, known = serve(model, users + ["cafe"])
    assert known.tolist() == [True] * 4 + [False]
    ref_scores, ref_pos = check.exact_recommendations(spec, range(4), 3)
    assert ids[:4].tolist() == np.asarray(items, dtype=object)[ref_pos].tolist()
    out = model.signatures["similar_items"](item_id=tf.constant(["項目", "x\ty"]))
    assert out["known"].numpy().all()
    assert "項目" not in decode(out["item_ids"])[0]
