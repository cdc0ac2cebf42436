"""MovieLens loader on tiny files of each variant's format."""

import numpy as np
import pytest

from cml_tf.data import DataError, load_movielens
from cml_tf.data.movielens import GENRES_100K, detect_variant

# (user, movie, rating): user 1 has 3 positives, user 2 has 2, user 10 has 1 (+ a 3-star),
# so min_user_positives=1 keeps users 1, 2 and (numerically after 2) 10 is dropped.
RATINGS = [
    (1, 10, 5), (1, 2, 4), (1, 3, 4.5), (1, 4, 2),
    (2, 2, 4), (2, 10, 5),
    (10, 3, 4), (10, 4, 3),
]


def write_100k(folder, ratings=RATINGS, genre_file=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(
        "".join(f"{u}\t{i}\t{int(r)}\t88125000{k}\n" for k, (u, i, r) in enumerate(ratings)))
    flags = {2: [1], 3: [2, 5], 4: [], 10: [18]}  # genre positions per movie
    lines = []
    for movie, on in flags.items():
        bits = ["1" if g in on else "0" for g in range(19)]
        lines.append("|".join([str(movie), "Caf\xe9 (1995)", "01-Jan-1995", "",
                               "http://x"] + bits))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    if genre_file:
        (folder / "u.genre").write_text(
            "".join(f"{name}|{k}\n" for k, name in enumerate(GENRES_100K)) + "\n")
    return folder


def write_1m(folder, ratings=RATINGS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(
        "".join(f"{u}::{i}::{int(r)}::97830{k}\n" for k, (u, i, r) in enumerate(ratings)))
    (folder / "movies.dat").write_bytes(
        "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
        "3::Grumpier Old Men (1995)::Comedy|Romance\n"
        "4::Les Mis\xe9rables (1995)::Drama\n"
        "10::GoldenEye (1995)::Action|Adventure|Thriller\n".encode("latin-1"))
    return folder


def write_csv(folder, ratings=RATINGS, newline="\n", bom=""):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{u},{i},{r},11122{k}" for k, (u, i, r) in enumerate(ratings)]
    (folder / "ratings.csv").write_text(
        bom + newline.join(["userId,movieId,rating,timestamp"] + rows) + newline, newline="")
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '2,"Jumanji, The (1995)",Adventure|Children|Fantasy\n'
        "3,Grumpier Old Men (1995),Comedy|Romance\n"
        "4,Unknown (2015),(no genres listed)\n"
        '10,"GoldenEye ""007"" (1995)",Action|Adventure|Thriller\n'
        "99,Not Rated (2000),Drama\n")
    return folder


def check_core(data):
    """The positives of RATINGS with min_rating=4, min_user_positives=1."""
    np.testing.assert_array_equal(data.user_ids, ["1", "2"])
    np.testing.assert_array_equal(data.item_ids, ["2", "3", "10"])  # numeric order, not "10" < "2"
    np.testing.assert_array_equal(data.matrix.toarray(), [[1, 1, 1], [1, 0, 1]])


def test_100k(tmp_path):
    data = load_movielens(write_100k(tmp_path), min_user_positives=1)
    assert data.name == "movielens-100k"
    check_core(data)
    assert list(data.feature_names) == list(GENRES_100K)
    features = data.item_features.toarray()
    assert list(np.flatnonzero(features[0])) == [1]       # movie 2
    assert list(np.flatnonzero(features[1])) == [2, 5]    # movie 3
    assert list(np.flatnonzero(features[2])) == [18]      # movie 10


def test_100k_default_genre_names_without_u_genre(tmp_path):
    data = load_movielens(write_100k(tmp_path, genre_file=False), min_user_positives=1)
    assert list(data.feature_names) == list(GENRES_100K)


def test_1m_latin1_and_double_colon(tmp_path):
    data = load_movielens(write_1m(tmp_path), min_user_positives=1)
    assert data.name == "movielens-1m"
    check_core(data)
    names = list(data.feature_names)
    assert names == sorted(["Adventure", "Children's", "Fantasy", "Comedy", "Romance",
                            "Action", "Thriller", "Drama"])
    row = data.item_features[2].indices  # movie 10
    assert sorted(names[j] for j in row) == ["Action", "Adventure", "Thriller"]


@pytest.mark.parametrize("newline, bom", [("\n", ""), ("\r\n", "\ufeff")])
def test_csv_variant(tmp_path, newline, bom):
    folder = write_csv(tmp_path / "ml-25m", newline=newline, bom=bom)
    data = load_movielens(folder, min_user_positives=1)
    assert data.name == "movielens-25m"
    check_core(data)
    names = list(data.feature_names)
    assert "(no genres listed)" not in names
    assert sorted(names[j] for j in data.item_features[0].indices) == [
        "Adventure", "Children", "Fantasy"]


def test_paper_defaults_keep_users_with_more_than_10_positives(tmp_path):
    ratings = [(7, m, 4) for m in range(11)] + [(8, m, 5) for m in range(10)]
    ratings += [(8, 50, 3.5), (9, 1, 1)]
    data = load_movielens(write_csv(tmp_path, ratings=ratings))
    np.testing.assert_array_equal(data.user_ids, ["7"])  # 11 positives > 10; user 8 has 10
    assert data.n_items == 11 and data.n_interactions == 11


def test_min_rating(tmp_path):
    data = load_movielens(write_100k(tmp_path), min_rating=2, min_user_positives=0)
    np.testing.assert_array_equal(data.user_ids, ["1", "2", "10"])
    assert data.n_interactions == 8


def test_no_features(tmp_path):
    assert load_movielens(write_1m(tmp_path), min_user_positives=1,
                          with_features=False).item_features is None


def test_detect_variant(tmp_path):
    assert detect_variant(write_100k(tmp_path / "a")) == "100k"
    assert detect_variant(write_1m(tmp_path / "b")) == "1m"
    assert detect_variant(write_csv(tmp_path / "ml-20m")) == "20m"
    assert detect_variant(write_csv(tmp_path / "mine")) == "latest"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="none of u.data"):
        detect_variant(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_movielens(tmp_path / "missing")


def test_explicit_variant_with_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"movielens-1m: missing ratings\.dat in"):
        load_movielens(write_100k(tmp_path), variant="1m")
    with pytest.raises(DataError, match="unknown MovieLens variant"):
        load_movielens(write_100k(tmp_path), variant="7m")


def test_filters_that_empty_the_data_are_named(tmp_path):
    folder = write_100k(tmp_path)
    with pytest.raises(DataError, match=r"no users with more than 10 positives "
                                         r"\(min_user_positives=10\) remain"):
        load_movielens(folder)
    with pytest.raises(DataError, match=r"no rating >= 6 \(min_rating\)"):
        load_movielens(folder, min_rating=6)


def test_bad_rating_names_file_and_line(tmp_path):
    folder = write_csv(tmp_path)
    text = (folder / "ratings.csv").read_text().splitlines()
    text[3] = "1,3,good,5"
    (folder / "ratings.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 4: rating 'good' is not a number"):
        load_movielens(folder)


def test_bad_id_and_short_line_in_u_data(tmp_path):
    folder = write_100k(tmp_path)
    (folder / "u.data").write_text("1\t2\t4\t0\nx\t2\t4\t0\n")
    with pytest.raises(DataError, match=r"u\.data, line 2: user id 'x' is not an integer"):
        load_movielens(folder)
    (folder / "u.data").write_text("1\t2\t4\t0\n\n1\t3\t4\t0\n")
    with pytest.raises(DataError, match=r"u\.data, line 2: missing user id"):
        load_movielens(folder)


def test_trailing_blank_lines_are_fine(tmp_path):
    folder = write_1m(tmp_path)
    with open(folder / "ratings.dat", "a") as handle:
        handle.write("\n\n")
    check_core(load_movielens(folder, min_user_positives=1))


def test_missing_column_lists_columns(tmp_path):
    folder = write_csv(tmp_path)
    (folder / "ratings.csv").write_text("user,movieId,rating\n1,2,4\n")
    with pytest.raises(DataError, match=r"no column 'userId'; columns found: 'user', "
                                         r"'movieId', 'rating'"):
        load_movielens(folder)


def test_empty_ratings_file(tmp_path):
    folder = write_1m(tmp_path)
    (folder / "ratings.dat").write_text("")
    with pytest.raises(DataError, match=r"ratings\.dat is empty"):
        load_movielens(folder)


def test_bad_u_item_line(tmp_path):
    folder = write_100k(tmp_path)
    with open(folder / "u.item", "a", encoding="latin-1") as handle:
        handle.write("11|Short|line\n")
    with pytest.raises(DataError, match=r"u\.item, line 5: expected 24 '\|'-separated fields"):
        load_movielens(folder, min_user_positives=1)


def test_an_eleven_digit_id_is_one_user_not_an_array_size(tmp_path):
    rows = "".join(f"12345678901,{i},5,0\n" for i in range(12))
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + rows)
    data = load_movielens(tmp_path, variant="latest", with_features=False)
    assert data.user_ids.tolist() == ["12345678901"] and data.n_items == 12
