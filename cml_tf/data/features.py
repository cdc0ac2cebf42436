"""Joining item features, keyed by raw item id, onto an :class:`Interactions`.

Features often come from another file than the interactions (citeulike-t's tags, MovieLens
genres, a user's own feature table), and a user-supplied split may hold only some of the items.
:func:`join_item_features` lines the feature rows up with the interactions' item order:

* an item of the interactions that has no feature row gets an empty (all-zero) row;
* a feature row whose item is not in the interactions is dropped; how many were dropped is logged
  as a warning (and returned by :func:`align_feature_rows`), since it usually means the feature
  file covers a larger catalogue than the interaction data, which is harmless, but can also mean
  the ids do not match (e.g. "0012" vs "12"), which is not;
* a raw item id that appears twice in the feature ids is an error.
"""

import dataclasses
import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions

log = logging.getLogger(__name__)


def align_feature_rows(item_ids: Sequence[str], feature_item_ids: Sequence[str],
                       features) -> Tuple[sp.csr_matrix, int]:
    """Feature rows reordered to ``item_ids``; returns ``(csr, n_dropped)``.

    Row ``i`` of the result is the feature row of ``item_ids[i]`` (empty when it has none).
    ``n_dropped`` counts feature rows whose id is not among ``item_ids``.
    """
    features = sp.csr_matrix(features, dtype=np.float32)
    feature_item_ids = np.asarray(feature_item_ids).astype(str)
    if features.shape[0] != len(feature_item_ids):
        raise DataError(f"{features.shape[0]} feature rows for {len(feature_item_ids)} feature "
                        "item ids")
    feature_index = pd.Index(feature_item_ids)
    if not feature_index.is_unique:
        repeated = feature_index[feature_index.duplicated()].unique()[:5]
        raise DataError(f"feature item ids are not unique, e.g. {list(repeated)}")
    position = feature_index.get_indexer(np.asarray(item_ids).astype(str))
    has_row = position >= 0
    # Select rows with a one-hot selection matrix: stays sparse, no Python loop.
    selection = sp.csr_matrix(
        (np.ones(int(has_row.sum()), np.float32), (np.flatnonzero(has_row), position[has_row])),
        shape=(len(position), features.shape[0]))
    aligned = (selection @ features).tocsr()
    aligned.sort_indices()
    n_dropped = features.shape[0] - int(has_row.sum())
    return aligned, n_dropped


def join_item_features(interactions: Interactions, feature_item_ids: Sequence[str], features,
                       feature_names: Optional[Sequence[str]] = None) -> Interactions:
    """``interactions`` with ``item_features`` built from rows keyed by raw item id.

    Args:
      interactions: the data whose item order the features must follow.
      feature_item_ids: raw item id of each feature row.
      features: (len(feature_item_ids) x n_features) sparse or dense matrix.
      feature_names: names of the feature columns (default ``f0, f1, ...``).

    Items without a feature row get an empty row; feature rows of unknown items are dropped and
    counted in a logged warning. Returns a new :class:`Interactions` (the input is unchanged).
    """
    aligned, n_dropped = align_feature_rows(interactions.item_ids, feature_item_ids, features)
    if n_dropped:
        log.warning("%s: %d feature rows name items that are not in the data and were dropped",
                    interactions.name, n_dropped)
    missing = int((np.diff(aligned.indptr) == 0).sum())
    if missing:
        log.info("%s: %d of %d items have no features (empty feature row)", interactions.name,
                 missing, interactions.n_items)
    return dataclasses.replace(interactions, item_features=aligned, feature_names=feature_names)
