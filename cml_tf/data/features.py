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
from cml_tf.data.lines import require_file

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


def extend_catalogue(interactions: Interactions, item_ids: Sequence[str]) -> Interactions:
    """``interactions`` with the ids of ``item_ids`` it lacks appended to its items (in that
    order, once each), as columns without interactions: items known from elsewhere (a feature
    table) that a model can still learn through their features and that held-out data may
    name."""
    item_ids = pd.unique(np.asarray(item_ids).astype(str))
    new = item_ids[~pd.Index(item_ids).isin(interactions.item_ids)]
    if not len(new):
        return interactions
    matrix = sp.hstack([interactions.matrix,
                        sp.csr_matrix((interactions.n_users, len(new)), dtype=np.float32)])
    features = interactions.item_features
    if features is not None:
        features = sp.vstack([features, sp.csr_matrix((len(new), features.shape[1]),
                                                      dtype=np.float32)])
    return dataclasses.replace(interactions, matrix=matrix.tocsr(), item_features=features,
                               item_ids=np.concatenate([interactions.item_ids, new]))


# ---- features of new items, from a file ------------------------------------------------------

NEW_ITEM_COLUMNS = ("item", "feature", "value")


class NewItemsError(DataError):
    """A new items file (:func:`read_item_features`) that cannot be used."""


def read_item_features(path, feature_names: Sequence[str]) -> Tuple[np.ndarray, sp.csr_matrix]:
    """``(item ids, features)`` of the items in a feature table, in the columns of
    ``feature_names`` (a trained model's feature vocabulary).

    The table (CSV, TSV or Parquet by extension, as :mod:`cml_tf.data.files` reads them) has one
    row per (item, feature): columns ``item`` (the new item's id), ``feature`` (a feature name
    the model knows, e.g. a citeulike-t tag) and optionally ``value`` (a finite number, 1 when
    the column is absent; repeated pairs are summed). Items come out in order of first
    appearance. Rows naming a feature the model does not know are ignored (counted in a logged
    warning); an item left without any known feature, an empty field or an id with leading or
    trailing spaces raises :class:`NewItemsError` (a :class:`DataError`).
    """
    try:
        return _read_item_features(path, feature_names)
    except NewItemsError:
        raise
    except DataError as error:
        raise NewItemsError(str(error)) from None


def _read_item_features(path, feature_names):
    from cml_tf.data import _pandas_io  # pylint: disable=import-outside-toplevel
    from cml_tf.data.files import file_format  # pylint: disable=import-outside-toplevel

    item_col, feature_col, value_col = NEW_ITEM_COLUMNS
    what = "new items file"
    kind = file_format(path)
    if kind == "parquet":
        header_lines = None
        path = require_file(path, what)
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises its own error types for bad files
            raise DataError(f"{what} {path}: not a readable Parquet file ({error})") from None
        frame = frame.astype({c: str for c in (item_col, feature_col) if c in frame.columns})
    else:
        header_lines = 1
        frame = _pandas_io.read_table(path, sep="," if kind == "csv" else "\t", dtype=str,
                                      what=what)
    _pandas_io.require_columns(frame, [item_col, feature_col], path, what)
    if len(frame) == 0:
        raise DataError(f"{what} {path} has a header but no rows")
    columns = {}
    for column in (item_col, feature_col):
        values = frame[column].fillna("").astype(str).to_numpy(dtype=str)
        for problem, bad in (("is empty", values == ""),
                             ("has leading or trailing spaces", values != np.char.strip(values))):
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                where = f"row {row + 1}" if header_lines is None else f"line {row + 2}"
                raise DataError(f"{what} {path}, {where}: {column} {str(values[row])!r} {problem}")
        columns[column] = values
    weights = (_pandas_io.float_column(frame, value_col, path, header_lines, value_col)
               if value_col in frame.columns else np.ones(len(frame)))
    items = pd.Index(pd.unique(columns[item_col]))
    feature_index = pd.Index(np.asarray(feature_names).astype(str))
    column = feature_index.get_indexer(columns[feature_col])
    known = column >= 0
    if not known.all():
        log.warning("%s: %d of %d rows name features the model does not know (ignored), e.g. "
                    "%r", path, int((~known).sum()), len(known),
                    str(columns[feature_col][np.flatnonzero(~known)[0]]))
    matrix = sp.csr_matrix((weights[known].astype(np.float32),
                            (items.get_indexer(columns[item_col][known]), column[known])),
                           shape=(len(items), len(feature_index)))
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    empty = np.flatnonzero(np.diff(matrix.indptr) == 0)
    if len(empty):
        raise DataError(f"{what} {path}: {len(empty)} of {len(items)} items have no feature the "
                        f"model knows, e.g. {str(items[empty[0]])!r}; their vectors would say "
                        "nothing (the model's features are the names in the export's "
                        "assets/feature_ids.txt)")
    return items.to_numpy(dtype=str), matrix
