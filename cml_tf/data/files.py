"""A person's own interaction files: CSV, TSV or Parquet, and ready-made train/valid/test splits.

Format, chosen by the file name's extension (a compression suffix such as ``.gz`` is allowed on
the text formats and handled by pandas):

* ``.csv``: comma-separated with a header line naming the columns;
* ``.tsv``, ``.txt``: tab-separated with a header line;
* ``.parquet``: a Parquet table.

Each row is one interaction: a user id column (default ``user``), an item id column (default
``item``) and optionally a positive weight column. Ids are read as strings as written
(``"007"`` stays ``"007"``; ``NA`` or ``null`` are ids, not missing values), except that leading
and trailing whitespace is removed (``" u1"`` is ``"u1"``; a warning counts the ids changed); in
Parquet, integer id columns become their decimal text. Text files may start with a UTF-8 BOM and
use CRLF.

Without a weight column every distinct (user, item) pair is one interaction of weight 1 (a pair
listed twice counts once); with one, the weights of repeated pairs are summed and must be finite
and non-negative (zero-weight rows are not interactions).

Ids are indexed in order of first appearance. :func:`load_split_files` reads a split made
elsewhere: the id maps come from the training file only, and held-out rows are mapped onto them
(see :func:`load_split_files`); a held-out file none of whose users is in the training file is
refused (it could only give empty metrics).
"""

import logging
import os
import pathlib
from typing import Optional, Tuple, Union

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cml_tf.data import _pandas_io
from cml_tf.data._tables import binary_matrix, factorize
from cml_tf.data.errors import DataError
from cml_tf.data.features import extend_catalogue
from cml_tf.data.interactions import Interactions
from cml_tf.data.split import Split
from cml_tf.data.lines import describe_columns, line_error, require_file

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


def file_format(path: PathLike) -> str:
    """``"csv"``, ``"tsv"`` or ``"parquet"`` from the file name (DataError for anything else)."""
    suffixes = [s.lower() for s in pathlib.Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix == ".parquet":
        return "parquet"
    if suffix in _SEPARATORS:
        return "csv" if suffix == ".csv" else "tsv"
    raise DataError(f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; "
                    "use .csv, .tsv, .txt or .parquet")


def read_interaction_table(path: PathLike, user_col: str = "user", item_col: str = "item",
                           weight_col: Optional[str] = None, sep: Optional[str] = None
                           ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``(users, items, weights)`` of an interaction file as numpy arrays (ids as str).

    ``sep`` overrides the separator implied by the extension for text files. Raises
    :class:`DataError` when the file is missing or empty, a column is absent (listing the columns
    found), an id is empty, or a weight is not a finite non-negative number.
    """
    path = require_file(path, "interaction file")
    kind = file_format(path)
    wanted = [user_col, item_col] + ([weight_col] if weight_col else [])
    header_lines = 1
    if kind == "parquet":
        frame = _read_parquet(path, wanted)
        header_lines = None
    else:
        separator = sep if sep is not None else _SEPARATORS[".csv" if kind == "csv" else ".tsv"]
        frame = _pandas_io.read_table(path, sep=separator, dtype=str, what="interaction file")
        _pandas_io.require_columns(frame, wanted, path, "interaction file")
    if len(frame) == 0:
        raise DataError(f"interaction file {path} has a header but no rows")
    users, stripped_users = _id_column(frame, user_col, path, header_lines)
    items, stripped_items = _id_column(frame, item_col, path, header_lines)
    if stripped_users or stripped_items:
        log.warning("%s: removed leading/trailing spaces from %d %s ids and %d %s ids (' a ' "
                    "and 'a' are one id)", path, stripped_users, user_col, stripped_items,
                    item_col)
    weights = None
    if weight_col:
        weights = _pandas_io.float_column(frame, weight_col, path, header_lines, weight_col)
        negative = np.flatnonzero(weights < 0)
        if len(negative):
            raise _row_error(path, negative[0], header_lines,
                             f"{weight_col} {weights[negative[0]]} is negative")
    return users, items, weights


def load_interactions_file(path: PathLike, user_col: str = "user", item_col: str = "item",
                           weight_col: Optional[str] = None, sep: Optional[str] = None,
                           name: Optional[str] = None) -> Interactions:
    """Reads one interaction file (CSV/TSV/Parquet, see the module docstring) as Interactions.

    Users and items are indexed in order of first appearance; ``name`` defaults to the file's
    stem.
    """
    users, items, weights = read_interaction_table(path, user_col, item_col, weight_col, sep)
    rows, user_ids = factorize(users, sort=False)
    cols, item_ids = factorize(items, sort=False)
    matrix = _matrix(rows, cols, weights, (len(user_ids), len(item_ids)))
    return Interactions(matrix, user_ids, item_ids,
                        name=name or pathlib.Path(path).name.split(".")[0])


def load_split_files(train_path: PathLike, valid_path: Optional[PathLike] = None,
                     test_path: Optional[PathLike] = None, user_col: str = "user",
                     item_col: str = "item", weight_col: Optional[str] = None,
                     sep: Optional[str] = None, extra_items=None) -> Split:
    """Reads a ready-made split (nothing is re-split) as a :class:`~cml_tf.data.split.Split`.

    The training file alone defines the id maps (ids in order of first appearance); validation
    and test are held-out Interactions over the same maps. Per user, ``valid_unseen`` /
    ``test_unseen`` count distinct held-out items that never occur in the training file (they
    cannot be recommended but count as misses in the denominator of recall), and
    ``unknown_users[part]`` counts held-out rows whose user is not in the training file (dropped).

    All files share the column names and the format rules of :func:`load_interactions_file`
    (each file's format follows its own extension). ``extra_items``: item ids that join the
    catalogue after the training file's own (:func:`~cml_tf.data.features.extend_catalogue`),
    e.g. the items of a feature table; held-out rows that name them are then not unseen.
    """
    train = load_interactions_file(train_path, user_col, item_col, weight_col, sep, name="train")
    if extra_items is not None:
        train = extend_catalogue(train, extra_items)
    held_out = {}
    unseen = {}
    unknown = {}
    for split, path in (("valid", valid_path), ("test", test_path)):
        if path is None:
            continue
        held_out[split], unseen[split], unknown[split] = _held_out(
            train, path, split, user_col, item_col, weight_col, sep)
    return Split(train=train, valid=held_out.get("valid"), test=held_out.get("test"),
                      valid_unseen=unseen.get("valid"), test_unseen=unseen.get("test"),
                      unknown_users=unknown)


def _held_out(train: Interactions, path: PathLike, split: str, user_col: str, item_col: str,
              weight_col: Optional[str], sep: Optional[str]):
    users, items, weights = read_interaction_table(path, user_col, item_col, weight_col, sep)
    rows = pd.Index(train.user_ids).get_indexer(users)
    cols = pd.Index(train.item_ids).get_indexer(items)
    known_user = rows >= 0
    n_unknown_users = int((~known_user).sum())
    if n_unknown_users == len(users):
        examples = ", ".join(repr(str(user)) for user in users[:3])
        raise DataError(f"{split} file {path}: all {n_unknown_users} rows name users that are "
                        f"not in the training file (e.g. {examples}); "
                        f"nothing could be evaluated. Are both files from the same data, with "
                        f"the same {user_col!r} column?")
    if n_unknown_users:
        log.warning("%s (%s): %d rows name users that are not in the training file; dropped",
                    split, path, n_unknown_users)
    new_item = known_user & (cols < 0)
    # Distinct (user, unseen item) pairs per user.
    pairs = pd.DataFrame({"u": rows[new_item], "i": items[new_item]}).drop_duplicates()
    unseen = np.bincount(pairs["u"].to_numpy(np.int64), minlength=train.n_users).astype(np.int64)
    if len(pairs):
        log.info("%s (%s): %d held-out items are not in the training file (misses)", split,
                 path, len(pairs))
    keep = known_user & (cols >= 0)
    matrix = _matrix(rows[keep], cols[keep], None if weights is None else weights[keep],
                     train.matrix.shape)
    overlap = matrix.multiply(train.matrix).nnz
    if overlap:
        log.warning("%s (%s): %d held-out pairs are also training pairs", split, path, overlap)
    held = Interactions(matrix, train.user_ids, train.item_ids, name=split)
    return held, unseen, n_unknown_users


def _matrix(rows, cols, weights, shape) -> sp.csr_matrix:
    if weights is None:
        return binary_matrix(rows, cols, shape)
    matrix = sp.csr_matrix((weights.astype(np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _read_parquet(path: pathlib.Path, wanted) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
        names = pq.read_schema(path).names
    except ImportError:
        raise DataError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as error:  # pyarrow raises its own error types for bad files
        raise DataError(f"interaction file {path}: not a readable Parquet file ({error})") \
            from None
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"interaction file {path}: no column "
                        f"{', '.join(repr(c) for c in missing)}; columns found: "
                        f"{describe_columns(names)}")
    return pd.read_parquet(path, columns=list(dict.fromkeys(wanted)))


def _id_column(frame: pd.DataFrame, column: str, path: pathlib.Path,
               header_lines: Optional[int]) -> Tuple[np.ndarray, int]:
    """The column's ids as str, surrounding whitespace removed, and how many had some."""
    series = frame[column]
    missing = np.flatnonzero(np.asarray(pd.isna(series)))
    if len(missing):
        raise _row_error(path, missing[0], header_lines, f"empty {column} id")
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy()
        if np.all(values == np.floor(values)):
            series = series.astype(np.int64)
    raw = series.astype(str)
    values = raw.str.strip()
    n_stripped = int((values != raw).sum())
    values = values.to_numpy(dtype=str)
    empty = np.flatnonzero(values == "")
    if len(empty):
        raise _row_error(path, empty[0], header_lines, f"empty {column} id")
    return values, n_stripped


def _row_error(path, position: int, header_lines: Optional[int], message: str) -> DataError:
    if header_lines is None:
        return DataError(f"{path}, row {position + 1}: {message}")
    return line_error(path, position + 1 + header_lines, message)
