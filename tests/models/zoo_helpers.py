"""Helpers of the model-zoo tests (imported by name: pytest puts this folder on sys.path)."""

import functools

import numpy as np
import tensorflow as tf

from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic
from cml_tf.evaluation import evaluate


@functools.lru_cache(maxsize=None)
def planted_split():
    """Planted taste clusters with tag features: 500 users x 400 items, 10 clusters."""
    data = make_synthetic(n_users=500, n_items=400, n_clusters=10, mean_per_user=15, seed=1)
    return split_per_user(data, seed=0)


class Popularity:
    """Scores every item by its number of training users."""

    def __init__(self, train):
        self.counts = tf.constant(np.asarray(train.matrix.sum(axis=0)).ravel(), tf.float32)

    def score(self, users):
        return tf.tile(self.counts[None], [tf.size(users), 1])


def fit(model, train, epochs, lr=0.05, batch_size=256):
    model.compile(optimizer=tf.keras.optimizers.Adagrad(lr))
    return model.fit(positive_pairs_dataset(train, batch_size, seed=0), epochs=epochs, verbose=0)


def recall_vs_popularity(model, split, k=10):
    """(validation recall@k of the model, of popularity)."""
    ours = evaluate(model, split, "valid", (k,))[f"recall@{k}"]
    popular = evaluate(Popularity(split.train), split, "valid", (k,))[f"recall@{k}"]
    return ours, popular


def assert_round_trip(model, tmp_path, users=(0, 1, 2)):
    """get_config/from_config plus weights give the same scores and the same metric."""
    clone = type(model).from_config(model.get_config())
    path = str(tmp_path / "weights")
    model.save_weights(path)
    clone.load_weights(path)
    users = tf.constant(users, tf.int32)
    np.testing.assert_allclose(clone.score(users).numpy(), model.score(users).numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(clone.recommend(users, 5)[1].numpy(),
                                  model.recommend(users, 5)[1].numpy())
    assert clone.metric == model.metric == "dot_product"
    # The Keras registry knows the class, and the .keras format round-trips.
    registered = tf.keras.utils.get_registered_object(f"cml_tf>{type(model).__name__}")
    assert registered is type(model)
    model.save(str(tmp_path / "model.keras"))
    loaded = tf.keras.models.load_model(str(tmp_path / "model.keras"))
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.score(users).numpy(), model.score(users).numpy())
    np.testing.assert_array_equal(loaded.known_items(users).flat_values.numpy(),
                                  model.known_items(users).flat_values.numpy())
    return clone


def assert_vectors_score(model, users=(0, 3, 7)):
    """score() is the dot product of the exported user_vectors and item_vectors."""
    u, v = model.user_vectors, model.item_vectors
    assert u.dtype == v.dtype == np.float32 and u.shape[1] == v.shape[1]
    np.testing.assert_allclose(model.score(tf.constant(users)).numpy(), u[list(users)] @ v.T,
                               rtol=1e-4, atol=1e-4)


def assert_recommend_excludes_known(model, train, users=(0, 1, 2, 3)):
    _, items = model.recommend(tf.constant(users), 10)
    for row, user in zip(items.numpy(), users):
        assert not set(row) & set(train.matrix[user].indices)


def check_learns_and_round_trips(cls, tmp_path, epochs=12, lr=0.05, **hyperparameters):
    """Trains ``cls`` (dim 16) on the planted split; asserts validation recall well above
    popularity, scores = exported vectors, known items excluded and the round trips.
    Returns (model, split, Keras history)."""
    split = planted_split()
    model = cls.from_interactions(split.train, dim=16, seed=0, **hyperparameters)
    history = fit(model, split.train, epochs=epochs, lr=lr)
    ours, popular = recall_vs_popularity(model, split)
    assert ours > 2 * popular, (ours, popular)  # well above popularity
    assert_vectors_score(model)
    assert_recommend_excludes_known(model, split.train)
    assert_round_trip(model, tmp_path)
    return model, split, history
