"""Book-Crossing (BookCX, Ziegler et al. 2005): which user rated which book.

File (in one folder, e.g. ``$CML_TF_DATA/bookcrossing/``): ``BX-Book-Ratings.csv``, latin-1,
``;``-separated, every field in double quotes, with the header
``"User-ID";"ISBN";"Book-Rating"``. Ratings are 1-10 (explicit) or 0 (implicit: the user
interacted with the book without rating it). A comma-separated copy with the same header
(as some mirrors ship it) is read too.

Preprocessing (paper, section 4.1: "For BookCX data, we include users that have more than 5
ratings"): every row is an interaction, implicit (0) and explicit (1-10) alike, since both say
the user engaged with the book (``include_implicit=False`` keeps only explicit ratings); users
with MORE than ``min_user_ratings`` (5) distinct books are kept; books no kept user rated are
dropped. The matrix is binary. The paper's item features (book subjects from OpenLibrary.org)
are not part of the data set and are not loaded.

Ids: raw user ids and ISBNs as in the file (surrounding whitespace removed, case kept), in order
of first appearance.

There is no reliable public download address for this data set any more: put the file in the
folder yourself.
"""

import logging
import pathlib

import numpy as np

from cml_tf.data import _pandas_io
from cml_tf.data._tables import build_binary
from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions
from cml_tf.data.lines import PathLike, require_folder

log = logging.getLogger(__name__)

NAME = "bookcrossing"
FILES = ("BX-Book-Ratings.csv",)
HINT = ("Book-Crossing has no reliable public download address any more: get "
        "BX-Book-Ratings.csv (from the original BX-CSV-Dump.zip of Ziegler et al., or a mirror of "
        "it) and put it in that folder.")
COLUMNS = ("User-ID", "ISBN", "Book-Rating")


def load_bookcrossing(data_dir: PathLike, min_user_ratings: int = 5,
                      include_implicit: bool = True) -> Interactions:
    """Loads Book-Crossing from ``data_dir/BX-Book-Ratings.csv`` as binary implicit feedback.

    Args:
      data_dir: folder holding ``BX-Book-Ratings.csv``.
      min_user_ratings: keep users with MORE than this many rated books (paper: 5).
      include_implicit: count the implicit rows (rating 0) as interactions (default, see the
        module docstring).
    """
    folder = require_folder(data_dir, FILES, NAME, HINT)
    path = folder / FILES[0]
    sep = _separator(path)
    frame = _pandas_io.read_table(path, sep=sep, dtype=str, encoding="latin-1",
                                  what="ratings file")
    frame.columns = [str(c).strip() for c in frame.columns]
    _pandas_io.require_columns(frame, COLUMNS, path, "ratings file")
    if len(frame) == 0:
        raise DataError(f"ratings file {path} has no rows")
    ratings = _pandas_io.float_column(frame, "Book-Rating", path, 1, "rating")
    users = frame["User-ID"].fillna("").str.strip().to_numpy(dtype=str)
    books = frame["ISBN"].fillna("").str.strip().to_numpy(dtype=str)
    for label, ids in (("User-ID", users), ("ISBN", books)):
        empty = np.flatnonzero(ids == "")
        if len(empty):
            raise DataError(f"{path}, line {empty[0] + 2}: empty {label}")
    keep = ratings >= (0 if include_implicit else 1)
    return build_binary(
        users[keep], books[keep], sort_ids=False, name=NAME, min_user_count=min_user_ratings,
        user_filter=(f"more than {min_user_ratings} ratings (min_user_ratings="
                     f"{min_user_ratings})"),
        empty_message=(f"{NAME}: no explicit rating (1-10) in {path} (include_implicit=False)"
                       if not include_implicit else f"{NAME}: no rating in {path}"))


def _separator(path: pathlib.Path) -> str:
    with open(path, "rb") as handle:
        header = handle.readline()
    return ";" if b";" in header or b"," not in header else ","
