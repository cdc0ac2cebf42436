"""citeulike-t: which CiteULike user saved which article, with the articles' tags.

Files (in one folder, e.g. ``$CML_TF_DATA/citeulike-t/``):

``users.dat``
  Line ``u`` (0-based) is user ``u``: ``COUNT item item ...``. The first number is how many item
  ids follow; it is NOT an item (the paper authors' pre-2017 code read it as one).
``tag-item.dat``
  Line ``t`` (0-based) is tag ``t``: ``COUNT item item ...``, the items carrying the tag, again
  with a leading count.
``tags.dat``
  Line ``t`` is the name of tag ``t``.

Preprocessing (paper, section 4.1: "For CiteULike data, we use the tags of the papers as the item
features"): every user-article pair is a positive (no threshold, no user filter); item features
are a binary bag of tags, keeping a tag when it is on at least ``min_tag_count`` articles.
On the published files this gives 7,947 users, 25,975 items and 134,860 interactions (the
paper's Table 1 says 142,794 ratings, a figure inflated by the leading-count bug).

Ids: user ``u``'s raw id is ``str(u)`` (its line number, 0-based); items are in numeric order
of their raw ids. Ids are identities, never array sizes: when the item ids of ``users.dat`` are
a numbering (at least half of ``0..max`` occur, as in the published files: 25,584 of
``0..25,974`` are saved) every id ``0..max`` is an item, even one nobody saved, and item index
``i`` is raw id ``str(i)`` (the paper's 25,975 items); otherwise (say a few ids of 11 digits)
only the ids that occur are items. Users keep line order (a user line ``0`` with no items stays
as an empty row).

Strictness: a malformed token, a negative or non-numeric id, a count that disagrees with the
number of ids on its line, a blank line between data lines, or an empty file raise
:class:`DataError` naming the file and the 1-based line. A UTF-8 BOM and CRLF endings are fine.
"""

import logging
import re
from typing import List, Tuple

import numpy as np
import scipy.sparse as sp

from cml_tf.data.errors import DataError
from cml_tf.data.features import join_item_features
from cml_tf.data.interactions import Interactions
from cml_tf.data.lines import PathLike, line_error, read_lines, require_folder

log = logging.getLogger(__name__)

NAME = "citeulike-t"
FILES = ("users.dat", "tag-item.dat", "tags.dat")
HINT = ("The files are in the data folder of the paper authors' repository "
        "(github.com/changun/CollMetric, folder citeulike-t); cml_tf.data.load('citeulike-t') "
        "downloads them.")

_MAX_DIGITS = 12  # ids beyond 10^12 are certainly not article or tag numbers
_NUMBERS = re.compile(rf"[0-9]{{1,{_MAX_DIGITS}}}(?:\s+[0-9]{{1,{_MAX_DIGITS}}})*")
_TOKEN = re.compile(r"[0-9]+")


def read_count_lists(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Reads a ``COUNT id id ...`` per line file: ``(lengths, ids)``.

    ``lengths[k]`` is the number of ids on line ``k + 1`` and ``ids`` holds all ids, line after
    line (int64), so line ``k``'s ids are ``ids[offsets[k]:offsets[k + 1]]`` with
    ``offsets = [0, *cumsum(lengths)]``. Validates every line (see the module docstring).
    """
    lines = read_lines(path)
    lengths = np.empty(len(lines), np.int64)
    ids: List[int] = []
    for index, line in enumerate(lines):
        text = line.strip()
        if not _NUMBERS.fullmatch(text):
            raise line_error(path, index + 1, _describe_bad_line(text))
        values = list(map(int, text.split()))
        count = values[0]
        if count != len(values) - 1:
            raise line_error(path, index + 1,
                             f"the count prefix says {count} ids follow but the line has "
                             f"{len(values) - 1} (expected 'COUNT id id ...')")
        lengths[index] = count
        ids.extend(values[1:])
    return lengths, np.array(ids, dtype=np.int64)


def _describe_bad_line(text: str) -> str:
    if not text:
        return "blank line; expected 'COUNT id id ...' (write '0' for a line without ids)"
    for column, token in enumerate(text.split(), 1):
        if _TOKEN.fullmatch(token):
            if len(token) > _MAX_DIGITS:
                return f"id {token!r} (token {column}) is too large"
            continue
        if token.startswith("-") and _TOKEN.fullmatch(token[1:]):
            return f"negative id {token} (token {column}); ids are non-negative integers"
        return (f"malformed token {token[:40]!r} (token {column}); expected non-negative "
                "integers 'COUNT id id ...'")
    return "malformed line; expected non-negative integers 'COUNT id id ...'"


def load_citeulike_t(data_dir: PathLike, min_tag_count: int = 5,
                     with_features: bool = True) -> Interactions:
    """Loads citeulike-t from ``data_dir`` (``users.dat``, plus tag files for features).

    Args:
      data_dir: folder holding ``users.dat`` (and ``tag-item.dat``, ``tags.dat`` when
        ``with_features``).
      min_tag_count: keep a tag as a feature when at least this many items carry it (paper
        section 4.1 uses the tags as item features without stating a cut). 5 gives 8,311 tags;
        4 gives 10,403, close to the paper's 10,399 (Table 1): about what a cut of 5 gives when
        the leading count of tag-item.dat is misread as an item, as the authors' code did.
      with_features: attach the binary bag-of-tags item features.

    Returns:
      Interactions with 7,947 users x 25,975 items and 134,860 binary interactions on the
      published files; users in line order, items in numeric order (see the module docstring).
    """
    needed = FILES if with_features else FILES[:1]
    folder = require_folder(data_dir, needed, NAME, HINT)
    path = folder / "users.dat"
    lengths, items = read_count_lists(path)
    if len(items) == 0:
        raise DataError(f"{path}: no user has any item (every line is '0')")
    n_users = len(lengths)
    item_ids, columns = _item_index(items)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    matrix = sp.csr_matrix((np.ones(len(items), np.float32), columns, indptr),
                           shape=(n_users, len(item_ids)))
    matrix.sum_duplicates()
    if matrix.nnz < len(items):
        log.warning("%s: %d repeated items within user lines collapsed", path,
                    len(items) - matrix.nnz)
        matrix.data[:] = 1.0
    data = Interactions(matrix, np.arange(n_users).astype(str), item_ids.astype(str), name=NAME)
    if not with_features:
        return data
    feature_ids, features, names = load_citeulike_t_tag_features(folder, min_tag_count)
    return join_item_features(data, feature_ids, features, names)


def _item_index(items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(item raw ids in numeric order, column of every entry of items)`` (module docstring)."""
    distinct, columns = np.unique(items, return_inverse=True)
    if int(distinct[-1]) + 1 <= 2 * len(distinct):  # a numbering: every number is an item
        return np.arange(int(distinct[-1]) + 1), items
    log.info("%s: %d distinct item ids up to %d are not a numbering 0..max; indexing only the "
             "ids that occur", NAME, len(distinct), distinct[-1])
    return distinct, columns


def load_citeulike_t_tag_features(data_dir: PathLike, min_tag_count: int = 5
                                  ) -> Tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """citeulike-t's binary bag-of-tags features keyed by raw item id.

    Returns ``(item_raw_ids, features, names)``: ``item_raw_ids`` are the item ids of
    tag-item.dat as for ``users.dat`` (see the module docstring: ``"0" .. str(max)`` for a
    numbering), ``features`` is the (items x kept tags) binary CSR float32 matrix and
    ``names`` the kept tags' names (from ``tags.dat``), in tag-line order. A tag is kept when at
    least ``min_tag_count`` distinct items carry it. Join the result to any
    :class:`Interactions` with :func:`cml_tf.data.features.join_item_features`.
    """
    if min_tag_count < 1:
        raise DataError(f"min_tag_count must be at least 1, got {min_tag_count}")
    folder = require_folder(data_dir, FILES[1:], NAME, HINT)
    tag_item_path = folder / "tag-item.dat"
    lengths, items = read_count_lists(tag_item_path)
    names = np.array(read_lines(folder / "tags.dat"))
    if len(names) != len(lengths):
        raise DataError(f"{folder / 'tags.dat'} has {len(names):,} tag names but "
                        f"{tag_item_path} has {len(lengths):,} tag lines")
    if len(items) == 0:
        raise DataError(f"{tag_item_path}: no tag is on any item (every line is '0')")
    tags = np.repeat(np.arange(len(lengths)), lengths)
    item_ids, columns = _item_index(items)
    # tags x items, binary (a tag listed twice for one item counts once).
    tag_items = sp.csr_matrix((np.ones(len(items), np.float32), (tags, columns)),
                              shape=(len(lengths), len(item_ids)))
    tag_items.sum_duplicates()
    tag_items.data[:] = 1.0
    kept = np.flatnonzero(np.diff(tag_items.indptr) >= min_tag_count)
    if len(kept) == 0:
        raise DataError(f"{tag_item_path}: no tag is on at least {min_tag_count} items "
                        "(min_tag_count)")
    log.info("%s: kept %d of %d tags on at least %d items", NAME, len(kept), len(lengths),
             min_tag_count)
    features = tag_items[kept].T.tocsr()
    features.sort_indices()
    return item_ids.astype(str), features, names[kept]
