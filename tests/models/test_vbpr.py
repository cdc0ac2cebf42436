"""VBPR-MLP: free item factors beside feature-MLP factors, free + feature bias."""

from hybrid_checks import (check_cold_start_vectors, check_feature_gradients_are_sparse,
                           check_learns_and_round_trips)

from cml_tf.models import VBPRMLP


def test_vbpr_learns_embeds_cold_items_and_round_trips(tmp_path):
    model, split = check_learns_and_round_trips(VBPRMLP, tmp_path, hidden=32, feature_dim=6)
    check_feature_gradients_are_sparse(model, split)
    free = model.free_items.embeddings.numpy()  # [n_items, 10 free + 1 bias]

    def without_free_part(items):
        vectors = model.item_vectors[items].copy()
        vectors[:, :10] = 0.0
        vectors[:, -1] -= free[items, -1]
        return vectors

    check_cold_start_vectors(model, split, without_free_part)
    assert model.item_vectors.shape == (split.train.n_items, 17)
