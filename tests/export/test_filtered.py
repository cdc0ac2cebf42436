"""Request-time filters: recommend_filtered, similar_items_filtered and
recommend_for_items_filtered against exact search over each row's allowed items (numpy), on
every index of the session's exports."""

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import EXACT, EXPORTS, K, filtered_reference, item_positions, recall

from cml_tf.serving import check

LABELS = sorted(EXPORTS)


@pytest.fixture(scope="module")
def loaded(exports):
    return {label: tf.saved_model.load(str(path)) for label, (path, _) in exports.items()}


def decode(tensor):
    return np.array([[b.decode() for b in row] for row in tensor.numpy()],
                    dtype=object).reshape(tensor.shape)


def padded(rows):
    width = max([len(row) for row in rows] + [1])
    return tf.constant([list(row) + [""] * (width - len(row)) for row in rows], tf.string,
                       shape=[len(rows), width])


def call(model, name, queries, include, exclude):
    key = {"recommend_filtered": "user_id", "similar_items_filtered": "item_id",
           "recommend_for_items_filtered": "item_ids"}[name]
    query = padded(queries) if key == "item_ids" else tf.constant(queries, tf.string,
                                                                  shape=[len(queries)])
    out = model.signatures[name](**{key: query}, include_items=padded(include),
                                 exclude_items=padded(exclude))
    return decode(out["item_ids"]), out["scores"].numpy(), out["known"].numpy()


def known_positions(spec, user):
    return spec.known.indices[spec.known.indptr[user]:spec.known.indptr[user + 1]]


def user_batch(spec, n, seed):
    """Users (known and unknown) with random filters: inclusion lists of every length around K
    (with unknown ids and repeats), rows without one, exclusions of nearby items."""
    rng = np.random.default_rng(seed)
    users, include, exclude, rows = [], [], [], []
    for b in range(n):
        u = int(rng.integers(spec.n_users))
        unknown = b % 7 == 3
        users.append("nobody" if unknown else spec.user_ids[u])
        rows.append(None if unknown else u)
        kind = b % 4
        listed = list(spec.item_ids[rng.choice(spec.n_items, int(rng.integers(1, 2 * K)),
                                               replace=False)])
        include.append([] if kind == 0 else [""] if kind == 1 else
                       listed + ["no such item", listed[0]] if kind == 2 else listed)
        exclude.append(list(spec.item_ids[rng.choice(spec.n_items, int(rng.integers(0, 30)),
                                                     replace=False)]) + ["ghost"])
    queries = np.stack([spec.user_vectors[u] if u is not None else spec.fallback_query()
                        for u in rows])
    own = [known_positions(spec, u) if u is not None else [] for u in rows]
    return users, include, exclude, queries, own


def assert_matches(label, exports, got_ids, got_scores, ref_ids, ref_scores, listed):
    """Rows with an inclusion list: identical to exact search whatever the index; the others:
    identical for an exact index, else recall at least the index report's (less 2 points)."""
    listed = np.asarray(listed)
    assert check.same_top_k(got_ids[listed], got_scores[listed], ref_ids[listed],
                            ref_scores[listed], atol=1e-5)
    if listed.all():
        return
    rest = ~listed
    if label in EXACT:
        assert check.same_top_k(got_ids[rest], got_scores[rest], ref_ids[rest],
                                ref_scores[rest], atol=1e-5)
    else:
        reported = exports[label][1]["report"][f"recall@{K}"]
        assert recall(got_ids[rest], ref_ids[rest]) >= reported - 0.02


@pytest.mark.parametrize("label", LABELS)
def test_recommend_filtered_is_exact_search_over_the_allowed_items(label, trained, exports,
                                                                   loaded):
    _, _, spec = trained
    users, include, exclude, queries, own = user_batch(spec, 60, seed=1)
    ids, scores, known = call(loaded[label], "recommend_filtered", users, include, exclude)
    assert ids.shape == scores.shape == (60, K)
    assert known.tolist() == [u != "nobody" for u in users]
    ref_ids, ref_scores = filtered_reference(spec, queries, include, exclude, own)
    assert_matches(label, exports, ids, scores, ref_ids, ref_scores, [any(r) for r in include])
    for row, inc, exc, o in zip(ids, include, exclude, own):   # never a forbidden item
        returned = {i for i in row if i}
        assert not returned & (set(exc) | set(spec.item_ids[o]))
        if any(inc):
            assert returned <= set(inc)
    # An inclusion list shorter than k is padded with "" and NaN, like any short result.
    short = [b for b, inc in enumerate(include) if any(inc) and len(set(inc)) < K]
    assert short and all(np.isnan(scores[b, -1]) and ids[b, -1] == "" for b in short)


@pytest.mark.parametrize("label", LABELS)
def test_item_signatures_filtered(label, trained, exports, loaded):
    _, _, spec = trained
    rng = np.random.default_rng(2)
    items = list(spec.item_ids[rng.choice(spec.n_items, 12, replace=False)]) + ["no such item"]
    include = [[] if b % 3 == 0 else list(spec.item_ids[rng.choice(spec.n_items, 30,
                                                                    replace=False)]) + [items[b]]
               for b in range(len(items))]
    exclude = [list(spec.item_ids[rng.choice(spec.n_items, 5, replace=False)])
               for _ in items]
    ids, scores, known = call(loaded[label], "similar_items_filtered", items, include, exclude)
    assert known.tolist() == [True] * 12 + [False]
    where = {item: j for j, item in enumerate(spec.item_ids)}
    queries = np.stack([spec.item_vectors[where[i]] if i in where else spec.fallback_query()
                        for i in items])
    own = [[where[i]] if i in where else [] for i in items]
    ref_ids, ref_scores = filtered_reference(spec, queries, include, exclude, own)
    assert_matches(label, exports, ids, scores, ref_ids, ref_scores, [any(r) for r in include])
    assert all(item not in row for item, row in zip(items, ids))

    liked = [list(spec.item_ids[rng.choice(spec.n_items, 3, replace=False)]) for _ in range(9)]
    liked[4] = ["no such item"]                                  # no known item: the centroid
    include = [[] if b % 2 else list(spec.item_ids[rng.choice(spec.n_items, 25,
                                                               replace=False)]) + liked[b]
               for b in range(9)]
    exclude = [[""] for _ in range(9)]
    ids, scores, known = call(loaded[label], "recommend_for_items_filtered", liked, include,
                              exclude)
    assert known.tolist() == [b != 4 for b in range(9)]
    queries, own = [], []
    for row in liked:
        given = item_positions(spec, row)
        if len(given):
            mean = spec.item_vectors[given].mean(0)
            queries.append(mean / max(np.linalg.norm(mean), 1.0))
        else:
            queries.append(spec.fallback_query())
        own.append(given)
    ref_ids, ref_scores = filtered_reference(spec, np.stack(queries), include, exclude, own)
    assert_matches(label, exports, ids, scores, ref_ids, ref_scores, [any(r) for r in include])


@pytest.mark.parametrize("label", LABELS)
def test_unknown_inclusions_and_exclusions_of_everything_leave_nothing(label, trained,
                                                                       loaded):
    _, _, spec = trained
    users = [spec.user_ids[0], spec.user_ids[1], "nobody", spec.user_ids[2]]
    everything = list(spec.item_ids)
    include = [["no such item", "neither"], [], [], ["", ""]]
    exclude = [[], everything, everything, everything[:-3]]
    ids, scores, _ = call(loaded[label], "recommend_filtered", users, include, exclude)
    for b in range(3):
        assert (ids[b] == "").all() and np.isnan(scores[b]).all(), b
    # All but three items excluded (and some of those may be the user's own): at most three.
    left = set(everything[-3:]) - set(spec.item_ids[known_positions(spec, 2)])
    assert {i for i in ids[3] if i} <= left
    if label in EXACT:
        assert {i for i in ids[3] if i} == left


@pytest.mark.parametrize("label", ["brute_force", "partitioned", "scann"])
def test_batches_of_0_1_and_1000_rows(label, trained, exports, loaded):
    _, _, spec = trained
    ids, scores, known = call(loaded[label], "recommend_filtered", [], [], [])
    assert ids.shape == (0, K) and scores.shape == (0, K) and known.shape == (0,)
    users, include, exclude, queries, own = user_batch(spec, 1000, seed=3)
    ids, scores, known = call(loaded[label], "recommend_filtered", users, include, exclude)
    assert ids.shape == (1000, K)
    ref_ids, ref_scores = filtered_reference(spec, queries, include, exclude, own)
    assert_matches(label, exports, ids, scores, ref_ids, ref_scores, [any(r) for r in include])
    for b in (0, 1, 2, 3, 500, 999):       # a row does not depend on the rest of the batch
        one_ids, one_scores, _ = call(loaded[label], "recommend_filtered", users[b:b + 1],
                                      include[b:b + 1], exclude[b:b + 1])
        if any(include[b]) or label == "brute_force":
            assert one_ids[0].tolist() == ids[b].tolist()
            np.testing.assert_allclose(one_scores[0], scores[b], atol=1e-5)


@pytest.mark.parametrize("label", sorted(EXACT))
def test_no_filter_is_the_plain_signature(label, trained, loaded):
    """Padding-only filters give what serving_default gives (for an unknown user: the fallback
    list, computed here from the same centroid under no filter)."""
    _, _, spec = trained
    users = list(spec.user_ids[:30]) + ["nobody"]
    plain = loaded[label].signatures["serving_default"](user_id=tf.constant(users))
    ids, scores, known = call(loaded[label], "recommend_filtered", users, [[""]] * 31,
                              [[""]] * 31)
    assert check.same_top_k(ids, scores, decode(plain["item_ids"]), plain["scores"].numpy(),
                            atol=1e-5)
    assert known.tolist() == plain["known"].numpy().tolist()
