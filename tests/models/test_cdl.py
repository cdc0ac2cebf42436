"""CDL-MLP: item vector = feature MLP + free offset."""

import numpy as np
from hybrid_checks import (check_cold_start_vectors, check_feature_gradients_are_sparse,
                           check_learns_and_round_trips)

from cml_tf.models import CDLMLP


def test_cdl_learns_embeds_cold_items_and_round_trips(tmp_path):
    model, split = check_learns_and_round_trips(CDLMLP, tmp_path, hidden=32, lambda_v=1e-3)
    check_feature_gradients_are_sparse(model, split)
    offsets = model.free_items.embeddings.numpy()
    check_cold_start_vectors(model, split, lambda items: model.item_vectors[items] - offsets[items])
    assert model.item_vectors.shape == (split.train.n_items, 17)  # 16 + bias
    assert np.all(model.user_vectors[:, -1] == 1.0)
