"""FM: item identity + normalised tag factors, WARP loss."""

import numpy as np
from hybrid_checks import (check_cold_start_vectors, check_feature_gradients_are_sparse,
                           check_learns_and_round_trips)

from cml_tf.models import FM


def test_fm_learns_embeds_cold_items_and_round_trips(tmp_path):
    model, split = check_learns_and_round_trips(FM, tmp_path, lambda_v=1e-4)
    check_feature_gradients_are_sparse(model, split)
    identity = model.item_embedding.embeddings.numpy()
    weight = model.identity_weight.numpy()
    tags = np.asarray(split.train.item_features.sum(axis=1)).ravel()

    def without_identity(items):
        # v_j = w_j e_j + w_j sum_f x_jf e_f; a cold item normalises by its tags alone.
        tag_part = model.item_vectors[items] - weight[items, None] * identity[items]
        return tag_part * ((1.0 + tags[items]) / tags[items])[:, None]

    check_cold_start_vectors(model, split, without_identity)
    np.testing.assert_allclose(weight, 1.0 / (1.0 + tags), rtol=1e-6)
