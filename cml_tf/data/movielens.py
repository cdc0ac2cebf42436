"""MovieLens ratings (GroupLens) as implicit feedback, with genres as item features.

Variants and files (in one folder, e.g. ``$CML_TF_DATA/movielens-1m/``):

``100k``
  ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``, no header. Genres: ``u.item``
  (latin-1, ``|``-separated: id, title, release date, video release date, IMDb URL, then 19
  0/1 genre flags), genre names from ``u.genre`` when present.
``1m``
  ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``. Genres: ``movies.dat`` (latin-1,
  ``MovieID::Title::Genres`` with ``|``-separated genres).
``20m``, ``25m`` (and ``latest``, same format)
  ``ratings.csv`` with the header ``userId,movieId,rating,timestamp``. Genres: ``movies.csv``
  (``movieId,title,genres``, UTF-8, ``|``-separated genres; ``(no genres listed)`` means none).

Preprocessing (paper, section 4.1: "we include the ratings greater or equal to 4 as positive
feedback ... and include the users with more than 10 ratings. We use the genres and plot keywords
from imdb.com as item features"): a rating ``>= min_rating`` (4.0) is a positive; users with MORE
than ``min_user_positives`` (10) positives are kept (the paper says "ratings"; we count the
positives, which is what the model trains on); items no kept user rated positively are dropped.
Genres from the data set's own movie file are the item features (the paper's IMDb plot
keywords are not redistributable and are not included). The matrix is binary.

A folder that holds the files is read as it is, whatever else it holds and whatever the files
cover: ``cml_tf.data.load("movielens-1m", data_dir="../shared/data/movielens-1m-part")`` reads a
prefix of ml-1m (users 1-2999) without downloading anything or checking the official archive's
checksum (checksums guard downloads only, :mod:`cml_tf.data.registry`).

Ids: raw ids are the MovieLens numbers as strings; users and items are in numeric order.
Large files are read with pandas' C parser and processed with vectorised numpy (ml-20m: seconds).
"""

import logging
import pathlib
from typing import Optional, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cml_tf.data import _pandas_io
from cml_tf.data._tables import build_binary
from cml_tf.data.errors import DataError
from cml_tf.data.features import join_item_features
from cml_tf.data.interactions import Interactions
from cml_tf.data.lines import PathLike, line_error, read_lines

log = logging.getLogger(__name__)

#: variant -> (ratings file, movies file)
FILES = {
    "100k": ("u.data", "u.item"),
    "1m": ("ratings.dat", "movies.dat"),
    "20m": ("ratings.csv", "movies.csv"),
    "25m": ("ratings.csv", "movies.csv"),
    "latest": ("ratings.csv", "movies.csv"),
}
HINT = ("MovieLens archives are at https://files.grouplens.org/datasets/movielens/ "
        "(ml-100k.zip, ml-1m.zip, ml-20m.zip, ml-25m.zip); cml_tf.data.load('movielens-1m') etc. "
        "download and unpack them.")

GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
_NO_GENRE = "(no genres listed)"


def detect_variant(data_dir: PathLike) -> str:
    """The variant whose ratings file is in ``data_dir`` (``100k``, ``1m``, or a CSV variant:
    ``25m``/``20m`` when the folder name says so, else ``latest``)."""
    folder = pathlib.Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"movielens: folder {folder} does not exist; expected u.data (100k), "
                        f"ratings.dat (1m) or ratings.csv (20m/25m). {HINT}")
    if (folder / "u.data").is_file():
        return "100k"
    if (folder / "ratings.dat").is_file():
        return "1m"
    if (folder / "ratings.csv").is_file():
        for variant in ("25m", "20m"):
            if variant in folder.name.lower():
                return variant
        return "latest"
    raise DataError(f"movielens: none of u.data (100k), ratings.dat (1m), ratings.csv "
                    f"(20m/25m) in {folder}. {HINT}")


def load_movielens(data_dir: PathLike, variant: Optional[str] = None, min_rating: float = 4.0,
                   min_user_positives: int = 10, with_features: bool = True) -> Interactions:
    """Loads a MovieLens variant from ``data_dir`` as binary implicit feedback.

    Args:
      data_dir: folder with the variant's files (see the module docstring).
      variant: ``"100k"``, ``"1m"``, ``"20m"``, ``"25m"`` or ``"latest"``; None detects it from
        the files present.
      min_rating: ratings ``>=`` this are positives (paper: 4).
      min_user_positives: keep users with MORE than this many positives (paper: "more than 10").
      with_features: attach genre flags as item features when the movies file exists.
    """
    folder = pathlib.Path(data_dir).expanduser()
    variant = detect_variant(folder) if variant is None else str(variant).lower()
    if variant not in FILES:
        raise DataError(f"unknown MovieLens variant {variant!r}; expected one of "
                        f"{', '.join(FILES)}")
    ratings_name, movies_name = FILES[variant]
    name = f"movielens-{variant}"
    path = folder / ratings_name
    if not path.is_file():
        raise DataError(f"{name}: missing {ratings_name} in {folder} (expected files: "
                        f"{ratings_name}, {movies_name} for genres). {HINT}")
    users, items, ratings = _read_ratings(path, variant)
    positive = ratings >= min_rating
    data = build_binary(
        users[positive], items[positive], sort_ids=True, name=name,
        min_user_count=min_user_positives,
        user_filter=(f"more than {min_user_positives} positives (min_user_positives="
                     f"{min_user_positives})"),
        empty_message=(f"{name}: no rating >= {min_rating} (min_rating) in {path} "
                       f"({len(ratings):,} ratings)"))
    log.info("%s: %r", name, data)
    movies = folder / movies_name
    if not with_features:
        return data
    if not movies.is_file():
        log.info("%s: %s not found, no genre features", name, movies)
        return data
    movie_ids, genres, genre_names = read_genres(movies, variant)
    # The movies file lists every movie; those that no kept user liked are not items. That is
    # expected here (not a sign of mismatched ids), so they are dropped before the join.
    rated = np.isin(movie_ids, data.item_ids)
    if not rated.all():
        log.info("%s: %d of %d movies in %s have no kept positive (no genre row needed)", name,
                 int((~rated).sum()), len(movie_ids), movies_name)
    return join_item_features(data, movie_ids[rated], genres[rated], genre_names)


def _read_ratings(path: pathlib.Path, variant: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, item, rating)`` arrays of a ratings file (int64, int64, float64)."""
    if variant == "100k":
        frame = _pandas_io.read_table(path, sep="\t", names=["user", "item", "rating", "ts"],
                                      usecols=["user", "item", "rating"], what="ratings file")
        header, columns = 0, ("user", "item", "rating")
    elif variant == "1m":
        frame = _pandas_io.read_table(path, sep="::", names=["user", "item", "rating", "ts"],
                                      usecols=["user", "item", "rating"], encoding="latin-1",
                                      what="ratings file")
        header, columns = 0, ("user", "item", "rating")
    else:
        frame = _pandas_io.read_table(path, sep=",", what="ratings file")
        columns = ("userId", "movieId", "rating")
        _pandas_io.require_columns(frame, columns, path, "ratings file")
        header = 1
    if len(frame) == 0:
        raise DataError(f"ratings file {path} has no rows")
    users = _pandas_io.int_column(frame, columns[0], path, header, "user id")
    items = _pandas_io.int_column(frame, columns[1], path, header, "movie id")
    ratings = _pandas_io.float_column(frame, columns[2], path, header, "rating")
    return users, items, ratings


def read_genres(path: PathLike, variant: str) -> Tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """``(movie_raw_ids, genres, genre_names)`` from a movies file: binary movies x genres CSR."""
    path = pathlib.Path(path)
    if variant == "100k":
        return _read_genres_100k(path)
    if variant == "1m":
        ids, genre_lists = [], []
        for lineno, line in enumerate(read_lines(path, encoding="latin-1"), 1):
            fields = line.split("::")
            if len(fields) < 3 or not fields[0].strip().isdigit():
                raise line_error(path, lineno, "expected 'MovieID::Title::Genres'")
            ids.append(fields[0].strip())
            genre_lists.append(fields[-1].strip())
        return _genre_matrix(np.array(ids), pd.Series(genre_lists, dtype=object))
    frame = _pandas_io.read_table(path, sep=",", dtype=str, what="movies file")
    _pandas_io.require_columns(frame, ("movieId", "genres"), path, "movies file")
    ids = _pandas_io.int_column(frame, "movieId", path, 1, "movie id").astype(str)
    return _genre_matrix(ids, frame["genres"].fillna("").astype(object))


def _read_genres_100k(path: pathlib.Path):
    genre_file = path.with_name("u.genre")
    names = list(GENRES_100K)
    if genre_file.is_file():
        names = [line.split("|")[0] for line in read_lines(genre_file, encoding="latin-1")
                 if line.strip()]
    ids, flags = [], []
    for lineno, line in enumerate(read_lines(path, encoding="latin-1"), 1):
        fields = line.split("|")
        if len(fields) != 5 + len(names):
            raise line_error(path, lineno, f"expected {5 + len(names)} '|'-separated fields "
                             f"(id, title, dates, URL, {len(names)} genre flags), found "
                             f"{len(fields)}")
        row = fields[5:]
        if not fields[0].strip().isdigit() or any(f.strip() not in ("0", "1") for f in row):
            raise line_error(path, lineno, "the movie id must be a number and the genre flags "
                             "0 or 1")
        ids.append(fields[0].strip())
        flags.append([f.strip() == "1" for f in row])
    matrix = sp.csr_matrix(np.array(flags, dtype=np.float32).reshape(len(ids), len(names)))
    return np.array(ids), matrix, np.array(names)


def _genre_matrix(movie_ids: np.ndarray, genres: pd.Series):
    """Binary movies x genres CSR from ``|``-separated genre strings (names sorted)."""
    exploded = genres.reset_index(drop=True).str.split("|").explode()
    exploded = exploded.dropna().str.strip()
    exploded = exploded[(exploded != "") & (exploded != _NO_GENRE)]
    codes, names = pd.factorize(exploded, sort=True)
    rows = exploded.index.to_numpy()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes)),
                           shape=(len(movie_ids), len(names)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return np.asarray(movie_ids).astype(str), matrix, np.asarray(names).astype(str)
