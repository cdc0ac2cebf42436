"""CML's options: popularity and two-stage negative sampling, the item-centric (symmetric) term,
the learning-rate decay; what they sample, where their gradients go, and that they train."""

import ml_collections
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.data.synthetic import make_synthetic
from cml_tf.models import CML
from cml_tf.optimizers import SparseAdagrad
from cml_tf.train import learning_rate, make_optimizer


def dense_positives(n_users=60, n_items=80, seed=0):
    """Every user knows a third to two thirds of the items: pools and draws hit them often."""
    rng = np.random.default_rng(seed)
    share = rng.uniform(0.33, 0.66, n_users)[:, None]
    return sp.csr_matrix((rng.random((n_users, n_items)) < share).astype(np.float32))


@pytest.mark.parametrize("kwargs", [dict(sampling="popularity", sampling_beta=1.0),
                                    dict(sampling="two_stage", candidates=16, sampling_beta=0.5),
                                    dict(sampling="two_stage", candidates=16, sampling_beta=0.0)])
def test_no_known_positive_is_ever_the_sampled_negative(kwargs):
    matrix = dense_positives()
    model = CML(matrix.shape[0], matrix.shape[1], dim=4, num_negatives=5, lambda_c=0.0,
                known_positives=matrix, seed=0, **kwargs)
    users = tf.constant(np.repeat(np.arange(matrix.shape[0]), 30), tf.int32)
    for _ in range(3):
        hard, distances, _, factors, prior = model._sample_negatives(users)
        usable = np.isfinite(distances.numpy()).any(axis=1)
        assert usable.mean() > 0.95  # a pool of 16 can hold only known items
        known = model.sampler.is_known(users, hard).numpy()
        assert not np.any(known & usable)
        finite = np.isfinite(distances.numpy())
        assert np.all((factors.numpy() > 0) == finite)  # masked draws count for nothing
        assert prior.numpy().min() >= 0 and prior.numpy().max() < matrix.shape[1]


def place(model, users, items):
    model.user_embedding.embeddings.assign(np.asarray(users, np.float32))
    model.item_embedding.embeddings.assign(np.asarray(items, np.float32))


def one_step(lambda_item):
    """One SGD step on the pair (user 0, item 0): item 1 sits next to the positive and is the
    hardest negative whatever is drawn, item 2 is far away."""
    matrix = sp.csr_matrix(np.array([[1.0, 0.0, 0.0]], np.float32))
    model = CML(1, 3, dim=2, margin=1.0, num_negatives=20, lambda_c=0.0,
                lambda_item=lambda_item, known_positives=matrix, seed=0)
    users, items = [[0.0, 0.0]], [[0.5, 0.0], [0.3, 0.2], [-0.6, -0.3]]
    place(model, users, items)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01))
    logs = model.train_step((tf.constant([0]), tf.constant([0])))
    return (model.user_embedding.embeddings.numpy() - users,
            model.item_embedding.embeddings.numpy() - items, logs)


def test_item_centric_gradient_pushes_the_negative_from_the_positive_item():
    du0, dv0, _ = one_step(0.0)
    du1, dv1, logs = one_step(1.0)
    assert float(logs["item_loss"]) > 0
    u, v_pos, v_neg = np.zeros(2), np.array([0.5, 0.0]), np.array([0.3, 0.2])
    extra = {"user": du1[0] - du0[0], "positive": dv1[0] - dv0[0], "negative": dv1[1] - dv0[1]}

    def cosine(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    # [m + d(i,j)^2 - d(j,k)^2]_+: v_k away from v_j, v_j towards u_i and away from v_k,
    # u_i towards v_j (gradients 2w(v_j - v_k) on v_k, 2w(v_k - u_i) on v_j, 2w(u_i - v_j) on u).
    assert cosine(extra["negative"], v_neg - v_pos) > 0.999
    assert cosine(extra["positive"], u - v_neg) > 0.999
    assert cosine(extra["user"], v_pos - u) > 0.999
    np.testing.assert_allclose(dv1[2], dv0[2])  # the far item is never touched
    np.testing.assert_allclose(dv1[2], 0.0, atol=1e-6)
    # Same rank weight for both terms: the item term's steps are 2 lr w times the differences.
    w = float(logs["rank_weight"])
    np.testing.assert_allclose(extra["negative"], 2 * 0.01 * w * (v_neg - v_pos), rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampling="hardest"), "sampling must be one of"),
    (dict(sampling="two_stage"), "two_stage' needs candidates >= 1"),
    (dict(sampling_beta=-0.5), "sampling_beta must be"),
    (dict(lambda_item=-1.0), "lambda_item must be"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CML(10, 10, **kwargs)


def test_cosine_learning_rate_decay():
    config = ml_collections.ConfigDict(dict(optimizer="adagrad", learning_rate=0.2,
                                            lr_decay=0.75, epochs=10))
    schedule = learning_rate(config, steps_per_epoch=3)
    assert float(schedule(0)) == pytest.approx(0.2)
    assert float(schedule(15)) == pytest.approx(0.2 * (1 - 0.75 / 2))
    assert float(schedule(30)) == pytest.approx(0.05)
    assert isinstance(make_optimizer(config, 3), SparseAdagrad)
    config.lr_decay = 0.0
    assert learning_rate(config, 3) == 0.2
    config.lr_decay = 1.0
    with pytest.raises(ValueError, match=r"train.lr_decay must be in \[0, 1\)"):
        learning_rate(config, 3)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(sampling="popularity", sampling_beta=0.5,
                                         lambda_item=0.5),
                                    dict(sampling="two_stage", candidates=64)])
def test_variants_train_and_round_trip(kwargs, tmp_path):
    data = make_synthetic(n_users=400, n_items=300, n_clusters=6, mean_per_user=15, seed=1)
    model = CML.from_interactions(data, use_features=False, dim=16, margin=1.0, lambda_c=0.0,
                                  seed=0, **kwargs)
    model.compile(optimizer=SparseAdagrad(0.1))
    history = model.fit(positive_pairs_dataset(data, 512, seed=0), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    clone = CML.from_config(model.get_config())
    model.save_weights(str(tmp_path / "weights"))
    clone.load_weights(str(tmp_path / "weights"))
    assert (clone.sampling, clone.candidates, clone.lambda_item) == (
        model.sampling, model.candidates, model.lambda_item)
    users = tf.constant([0, 1, 2])
    np.testing.assert_allclose(clone.score(users).numpy(), model.score(users).numpy())
    if model.sampling != "uniform":
        np.testing.assert_array_equal(clone.sampler.alias.numpy(), model.sampler.alias.numpy())
