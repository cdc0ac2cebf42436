"""The CML model: sampling, sparse updates, censoring, learned structure, scoring, save/load."""

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.data.synthetic import make_figure3, make_synthetic
from cml_tf.layers.sampler import NegativeSampler, _fill_from_spares
from cml_tf.models import CML
from cml_tf.models.cml import negative_squared_distances, squared_distances
from cml_tf.optimizers import SparseAdagrad


def train(model, data, epochs, batch_size=256, lr=0.1, callbacks=None):
    model.compile(optimizer=SparseAdagrad(lr))
    return model.fit(positive_pairs_dataset(data, batch_size, seed=0), epochs=epochs,
                     verbose=0, callbacks=callbacks)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(n_users=400, n_items=300, n_clusters=6, mean_per_user=15, seed=1)


# ---- negative sampling -----------------------------------------------------------------------

@pytest.mark.parametrize("density", [0.001, 0.05, 0.3])
def test_no_known_positive_survives_sampling(density):
    matrix = sp.random(500, 2000, density=density, random_state=0, format="csr")
    sampler = NegativeSampler.from_matrix(matrix, seed=0)
    users = tf.constant(np.repeat(np.arange(500), 20), tf.int32)
    items, valid = sampler(users, 20)
    known = sampler.is_known(tf.reshape(users, [-1, 1]), items).numpy()
    assert not np.any(known & valid.numpy())
    assert valid.numpy().mean() > 0.999  # redrawing, not masking, handles the positives
    assert items.numpy().min() >= 0 and items.numpy().max() < 2000


def test_bloom_filter_has_no_false_negatives_and_few_false_positives():
    matrix = sp.random(3000, 5000, density=0.002, random_state=1, format="csr")
    sampler = NegativeSampler.from_matrix(matrix)
    coo = matrix.tocoo()
    flagged = sampler.maybe_known(tf.constant(coo.row[:, None]), tf.constant(coo.col[:, None]))
    assert bool(tf.reduce_all(flagged))
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 3000, 200000), rng.integers(0, 5000, 200000)
    maybe = sampler.maybe_known(tf.constant(users[:, None]), tf.constant(items[:, None]))
    exact = sampler.is_known(users, items).numpy()
    false_positive = (maybe.numpy().ravel() & ~exact).mean()
    assert false_positive < 0.002


def test_sampled_negatives_are_uniform_over_items():
    matrix = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 50))
    sampler = NegativeSampler.from_matrix(matrix, seed=3)
    items, _ = sampler(tf.zeros([2000], tf.int32), 25)
    counts = np.bincount(items.numpy().ravel(), minlength=50)
    assert counts[0] == 0
    expected = 2000 * 25 / 49
    assert np.all(np.abs(counts[1:] - expected) < 6 * np.sqrt(expected))


def test_rejected_draws_take_the_rows_accepted_spares_in_order():
    head = tf.constant([[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]])
    head_ok = tf.constant([[True, False, True, False],    # two rejected, two good spares
                           [True, True, True, True],      # nothing to replace
                           [False, False, False, True]])  # three rejected, one good spare
    spares = tf.constant([[90, 91, 92], [80, 81, 82], [70, 71, 72]])
    spares_ok = tf.constant([[False, True, True], [True, True, True], [False, False, True]])
    items, bad = _fill_from_spares(head, head_ok, spares, spares_ok)
    np.testing.assert_array_equal(items.numpy()[0], [10, 91, 12, 92])
    np.testing.assert_array_equal(items.numpy()[1], [20, 21, 22, 23])
    assert items.numpy()[2, 0] == 72 and items.numpy()[2, 3] == 33
    np.testing.assert_array_equal(bad.numpy(), [[False] * 4, [False] * 4,
                                                [False, True, True, False]])


def test_rows_with_more_rejections_than_spares_are_redrawn():
    # User 0 knows 90% of the items: most rows run out of spares and need redraw rounds.
    matrix = sp.csr_matrix((np.ones(450), (np.zeros(450, int), np.arange(450))), shape=(1, 500))
    sampler = NegativeSampler.from_matrix(matrix, seed=0, max_rounds=200)
    items, valid = sampler(tf.zeros([300], tf.int32), 10)
    assert valid.numpy().all()
    assert items.numpy().min() >= 450


# ---- a training step -------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", [SparseAdagrad, tf.keras.optimizers.Adagrad])
def test_steps_keep_rows_in_ball_and_touch_only_the_batch(synthetic, optimizer):
    """SparseAdagrad censors the rows as it writes them; with Keras' AdaGrad the step does."""
    model = CML.from_interactions(synthetic, dim=8, use_features=False)
    model.compile(optimizer=optimizer(0.5))
    users_before = model.user_vectors.copy()
    items_before = model.item_vectors.copy()
    users = tf.constant([0, 1, 2, 2], tf.int32)
    items = tf.constant([synthetic.matrix[u].indices[0] for u in (0, 1, 2, 2)], tf.int32)
    for _ in range(3):
        model.train_step((users, items))
    users_after, items_after = model.user_vectors, model.item_vectors
    assert np.linalg.norm(users_after, axis=1).max() <= 1 + 1e-6
    assert np.linalg.norm(items_after, axis=1).max() <= 1 + 1e-6
    changed_users = np.flatnonzero(np.any(users_after != users_before, axis=1))
    assert set(changed_users) <= {0, 1, 2} and len(changed_users) > 0
    changed_items = np.flatnonzero(np.any(items_after != items_before, axis=1))
    assert set(items.numpy()) <= set(changed_items)
    assert len(changed_items) <= 3 * (3 + 3)  # positives + one hardest negative per pair/step
    # AdaGrad's accumulator is updated sparsely too: untouched rows keep the initial value.
    accumulator = [v for v in model.optimizer.variables
                   if v.shape == model.item_embedding.embeddings.shape][0].numpy()
    untouched = np.setdiff1d(np.arange(synthetic.n_items), changed_items)
    assert np.all(accumulator[untouched] == accumulator[untouched][0, 0])


def test_sparse_adagrad_trains_exactly_like_keras_adagrad(synthetic):
    vectors = []
    for optimizer in (SparseAdagrad, tf.keras.optimizers.Adagrad):
        model = CML.from_interactions(synthetic, dim=8, use_features=True, seed=3)
        model.compile(optimizer=optimizer(1.0))
        model.fit(positive_pairs_dataset(synthetic, 256, seed=0), epochs=2, verbose=0)
        vectors.append((model.user_vectors, model.item_vectors))
        norms = np.linalg.norm(vectors[-1][1], axis=1)
        assert norms.max() <= 1 + 1e-6 and np.sum(norms > 1 - 1e-6) > 10  # censored rows
    np.testing.assert_array_equal(vectors[0][0], vectors[1][0])
    np.testing.assert_array_equal(vectors[0][1], vectors[1][1])


def test_fit_runs_every_batch_of_a_finite_dataset_each_epoch(synthetic):
    """fit reads a finite dataset through one repeated iterator (models/fitting.py); epochs
    must still be whole passes, and input of unknown length goes to Keras as it is."""
    class StepsPerEpoch(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.counts = []

        def on_epoch_begin(self, epoch, logs=None):
            self.counts.append(0)

        def on_train_batch_end(self, batch, logs=None):
            self.counts[-1] += 1

    model = CML.from_interactions(synthetic, dim=8, use_features=False)
    model.compile(optimizer=SparseAdagrad(0.1))
    dataset = positive_pairs_dataset(synthetic, 512, seed=0)
    steps = StepsPerEpoch()
    history = model.fit(dataset, epochs=3, verbose=0, callbacks=[steps])
    assert steps.counts == [int(dataset.cardinality())] * 3
    assert history.history["loss"][2] < history.history["loss"][0]
    unknown_length = dataset.filter(lambda users, items: tf.size(users) > 0)
    assert int(unknown_length.cardinality()) < 0
    model.fit(unknown_length, epochs=2, verbose=0, callbacks=[steps])
    assert steps.counts == [int(dataset.cardinality())] * 2


def test_training_reports_loss_parts(synthetic):
    model = CML.from_interactions(synthetic, dim=8, use_features=True)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    history = model.fit(positive_pairs_dataset(synthetic, 512), epochs=2, verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    assert set(logs) == {"loss", "metric_loss", "covariance_loss", "feature_loss",
                         "impostor_fraction", "rank_weight"}
    assert 0 <= logs["impostor_fraction"] <= 1
    assert 0 <= logs["rank_weight"] <= np.log(synthetic.n_items + 1)
    # loss is the sum of its weighted parts (epoch means of per-step values)
    parts = logs["metric_loss"] + logs["covariance_loss"] + logs["feature_loss"]
    assert logs["loss"] == pytest.approx(parts, rel=1e-4)


def test_loss_goes_down_and_recall_beats_popularity(synthetic):
    from cml_tf.data.split import split_per_user
    from cml_tf.evaluation import evaluate
    split = split_per_user(synthetic, seed=0)
    model = CML.from_interactions(split.train, dim=8, margin=1.0, use_features=False)
    history = train(model, split.train, epochs=30)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    recall = evaluate(model, split, "valid", ks=(20,))["recall@20"]
    popularity = split.train.item_counts().astype(np.float32)
    popular = type("Pop", (), {"score": lambda self, u: tf.tile(
        tf.constant(popularity)[None], [tf.size(u), 1])})()
    assert recall > 1.4 * evaluate(popular, split, "valid", ks=(20,))["recall@20"]


# ---- the metric learns the paper's Figure 3 --------------------------------------------------

def test_figure3_structure_is_learned():
    data = make_figure3()
    model = CML.from_interactions(data, dim=16, margin=0.5, seed=0)
    train(model, data, epochs=100)
    items, users = model.item_vectors, model.user_vectors
    v1, v2 = data.item_index(["v1", "v2"])
    unrelated = np.setdiff1d(np.arange(data.n_items), [v1, v2])
    d1 = ((items - items[v1]) ** 2).sum(1)
    d2 = ((items - items[v2]) ** 2).sum(1)
    assert d1[v2] < d1[unrelated].min()  # co-liked by U3: v1 and v2 are pulled together
    assert d2[v1] < d2[unrelated].min()
    for u in range(data.n_users):
        liked = data.matrix.indices[data.matrix.indptr[u]:data.matrix.indptr[u + 1]]
        nearest = np.argsort(((items - users[u]) ** 2).sum(1))[:len(liked)]
        assert set(nearest) == set(liked), data.user_ids[u]


# ---- scoring API -----------------------------------------------------------------------------

def test_score_recommend_and_similar_items(synthetic):
    model = CML.from_interactions(synthetic, dim=8, use_features=False)
    users = np.array([0, 5, 9])
    scores = model.score(tf.constant(users)).numpy()
    expected = -((model.user_vectors[users][:, None] - model.item_vectors[None]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, expected, atol=1e-5)

    top_scores, top_items = model.recommend(tf.constant(users), k=10)
    for row, user in enumerate(users):
        known = set(synthetic.matrix[user].indices)
        assert not known & set(top_items.numpy()[row])
        masked = scores[row].copy()
        masked[list(known)] = -np.inf
        np.testing.assert_allclose(top_scores.numpy()[row], np.sort(masked)[::-1][:10],
                                   atol=1e-5)
    _, with_known = model.recommend(tf.constant(users), k=10, exclude_known=False)
    np.testing.assert_array_equal(with_known.numpy(), np.argsort(-scores, 1)[:, :10])

    sims, similar = model.similar_items(tf.constant([3, 7]), k=5)
    assert 3 not in similar.numpy()[0] and 7 not in similar.numpy()[1]
    assert np.all(np.diff(sims.numpy(), axis=1) <= 0)
    with pytest.raises(ValueError, match="k="):
        model.recommend(tf.constant([0]), k=synthetic.n_items + 1)


def test_fused_scores_equal_the_op_by_op_formula_to_the_bit():
    """CML.score's single XLA pass gives TensorFlow's op-by-op numbers, clipping included."""
    rng = np.random.default_rng(0)
    queries = tf.constant(rng.standard_normal((37, 16)).astype(np.float32) * 0.3)
    table = tf.concat([queries[:5], rng.standard_normal((300, 16)).astype(np.float32) * 0.3], 0)
    dots = tf.matmul(queries, table, transpose_b=True)
    expected = tf.maximum(tf.reduce_sum(tf.square(queries), axis=1, keepdims=True) - 2.0 * dots
                          + tf.reduce_sum(tf.square(table), axis=1)[None, :], 0.0).numpy()
    np.testing.assert_array_equal(squared_distances(queries, table).numpy(), expected)
    np.testing.assert_array_equal(negative_squared_distances(queries, table).numpy(), -expected)


def test_known_items_are_the_training_positives(synthetic):
    model = CML.from_interactions(synthetic, dim=4, use_features=False)
    known = model.known_items(tf.constant([0, 17])).to_list()
    assert known[0] == synthetic.matrix[0].indices.tolist()
    assert known[1] == synthetic.matrix[17].indices.tolist()


def test_save_and_load_round_trips_scores(synthetic, tmp_path):
    model = CML.from_interactions(synthetic, dim=8, use_features=True)
    train(model, synthetic, epochs=1, batch_size=1024)
    path = str(tmp_path / "cml.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    users = tf.range(synthetic.n_users)
    np.testing.assert_array_equal(model.score(users).numpy(), loaded.score(users).numpy())
    np.testing.assert_array_equal(model.known_items(users).flat_values.numpy(),
                                  loaded.known_items(users).flat_values.numpy())
    features = model.features(tf.range(5))
    np.testing.assert_array_equal(model.embed_items(features).numpy(),
                                  loaded.embed_items(features).numpy())


def test_feature_prior_initialisation(synthetic):
    model = CML.from_interactions(synthetic, dim=8, init_items_from_features=True)
    projected = model.embed_items(model.features(tf.range(synthetic.n_items))).numpy()
    np.testing.assert_allclose(model.item_vectors, projected, atol=1e-6)


# ---- bad configuration -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"dim": 0}, "dim must be > 0"),
    ({"margin": 0.0}, "margin must be > 0"),
    ({"margin": float("nan")}, "margin must be > 0"),
    ({"num_negatives": 0}, "num_negatives must be > 0"),
    ({"lambda_c": -1.0}, "lambda_c must be"),
    ({"item_features": sp.random(5, 3, density=0.5, format="csr")}, "has 5 rows"),
    ({"item_features": sp.csr_matrix(np.full((10, 2), np.nan))}, "NaN or Inf"),
    ({"known_positives": sp.csr_matrix((3, 3))}, "known_positives has shape"),
])
def test_bad_configuration_fails_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CML(n_users=4, n_items=10, **kwargs)


def test_training_without_positives_says_what_to_do():
    model = CML(n_users=4, n_items=10)
    model.compile(optimizer="adagrad")
    data = tf.data.Dataset.from_tensors((tf.constant([0]), tf.constant([1])))
    with pytest.raises(ValueError, match="known_positives"):
        model.fit(data, verbose=0)
