"""Book-Crossing and Echo Nest loaders on tiny files in their published formats."""

import numpy as np
import pandas as pd
import pytest

from cml_tf.data import DataError, load_bookcrossing, load_echonest
from cml_tf.data.echonest import _read_positives_pandas, _read_positives_pyarrow

# ---- Book-Crossing -----------------------------------------------------------------------------


def write_bx(folder, rows, header='"User-ID";"ISBN";"Book-Rating"', sep=";", newline="\n"):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + [sep.join(f'"{v}"' for v in row) for row in rows]
    (folder / "BX-Book-Ratings.csv").write_bytes((newline.join(lines) + newline).encode("latin-1"))
    return folder


def bx_rows():
    rows = [("276725", f"03454{k}X", str(k % 11)) for k in range(6)]  # 6 books, one implicit 0
    rows += [("9", "0155061224", "5"), ("9", "0446520802", "0")]     # 2 ratings: dropped
    rows += [("276726", f"B{k}", "0") for k in range(7)]              # 7 implicit ratings
    rows += [("276727", "caf\xe9-\u00fc", "8")] * 2 + [("276727", f"C{k}", "9") for k in range(5)]
    return rows


def test_bookcrossing_keeps_users_with_more_than_5_ratings(tmp_path):
    data = load_bookcrossing(write_bx(tmp_path, bx_rows()))
    assert data.name == "bookcrossing"
    np.testing.assert_array_equal(data.user_ids, ["276725", "276726", "276727"])
    # Implicit (0) rows count as interactions; the repeated row of user 276727 counts once.
    np.testing.assert_array_equal(data.user_counts(), [6, 7, 6])
    assert "caf\xe9-\u00fc" in set(data.item_ids)  # latin-1 decoded
    assert "0155061224" not in set(data.item_ids)  # only rated by the dropped user
    assert set(np.unique(data.matrix.data)) == {1.0}


def test_bookcrossing_explicit_only_and_threshold(tmp_path):
    folder = write_bx(tmp_path, bx_rows())
    data = load_bookcrossing(folder, include_implicit=False, min_user_ratings=4)
    np.testing.assert_array_equal(data.user_ids, ["276725", "276727"])  # 5 and 6 explicit
    np.testing.assert_array_equal(data.user_counts(), [5, 6])
    data = load_bookcrossing(folder, min_user_ratings=0)
    assert "9" in set(data.user_ids)


def test_bookcrossing_comma_separated_crlf_copy(tmp_path):
    folder = write_bx(tmp_path, bx_rows(), header="User-ID,ISBN,Book-Rating", sep=",",
                      newline="\r\n")
    assert load_bookcrossing(folder).n_users == 3


def test_bookcrossing_errors(tmp_path):
    with pytest.raises(DataError, match=r"bookcrossing: folder .* does not exist; expected "
                                         r"it to hold BX-Book-Ratings\.csv"):
        load_bookcrossing(tmp_path / "none")
    folder = write_bx(tmp_path, [("1", "A", "x")])
    with pytest.raises(DataError, match=r"BX-Book-Ratings\.csv, line 2: rating 'x' is not a "
                                         "number"):
        load_bookcrossing(folder)
    write_bx(tmp_path, [("1", "A", "1")], header='"User";"ISBN";"Book-Rating"')
    with pytest.raises(DataError, match="no column 'User-ID'; columns found: 'User', 'ISBN'"):
        load_bookcrossing(folder)
    write_bx(tmp_path, [("1", "A", "1")] * 3)
    with pytest.raises(DataError, match=r"no users with more than 5 ratings "
                                         r"\(min_user_ratings=5\) remain"):
        load_bookcrossing(folder)
    write_bx(tmp_path, [("1", "A", "0")])
    with pytest.raises(DataError, match=r"no explicit rating .*include_implicit=False"):
        load_bookcrossing(folder, include_implicit=False)
    (folder / "BX-Book-Ratings.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_bookcrossing(folder)


# ---- Echo Nest ---------------------------------------------------------------------------------


def write_triplets(folder, rows, tail="\n"):
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(map(str, row)) for row in rows) + tail
    (folder / "train_triplets.txt").write_text(text)
    return folder


TRIPLETS = [
    ("b80344d063b5ccb3212f76538f3d9e43d87dca9e", "SOAKIMP12A8C130995", 5),
    ("b80344d063b5ccb3212f76538f3d9e43d87dca9e", "SOAPDEY12A81C210A9", 1),
    ("85c1f87fea955d09b4bec2e36aee110927aab915", "SOAKIMP12A8C130995", 12),
    ("85c1f87fea955d09b4bec2e36aee110927aab915", "SOBBMDR12A8C13253B", 7),
    ("bd4c6e843f00bd476847fb75c47b4fb430a06856", "SOBBMDR12A8C13253B", 4),
]


@pytest.mark.parametrize("chunk_rows", [2, 1000])
def test_echonest_play_count_threshold(tmp_path, chunk_rows):
    data = load_echonest(write_triplets(tmp_path, TRIPLETS), chunk_rows=chunk_rows)
    assert data.name == "echonest"
    np.testing.assert_array_equal(data.user_ids, [TRIPLETS[0][0], TRIPLETS[2][0]])
    np.testing.assert_array_equal(data.item_ids, ["SOAKIMP12A8C130995", "SOBBMDR12A8C13253B"])
    np.testing.assert_array_equal(data.matrix.toarray(), [[1, 0], [1, 1]])
    assert data.item_features is None


def test_echonest_options(tmp_path):
    folder = write_triplets(tmp_path, TRIPLETS)
    assert load_echonest(folder, min_play_count=1).n_interactions == 5
    data = load_echonest(folder, min_user_positives=1)
    np.testing.assert_array_equal(data.user_ids, [TRIPLETS[2][0]])
    with pytest.raises(DataError, match=r"no play count >= 100 \(min_play_count\)"):
        load_echonest(folder, min_play_count=100)
    with pytest.raises(DataError, match=r"no users with more than 5 positives "
                                         r"\(min_user_positives=5\)"):
        load_echonest(folder, min_user_positives=5)


@pytest.mark.parametrize("chunk_rows", [2, 1000])
def test_echonest_bad_lines(tmp_path, chunk_rows):
    rows = list(TRIPLETS)
    rows[3] = (rows[3][0], rows[3][1], "many")
    folder = write_triplets(tmp_path, rows)
    with pytest.raises(DataError, match=r"train_triplets\.txt, line 4: play count 'many' is "
                                         "not an integer"):
        load_echonest(folder, chunk_rows=chunk_rows)
    (folder / "train_triplets.txt").write_text("a\tb\t5\n\na\tc\t6\n")
    with pytest.raises(DataError, match=r"train_triplets\.txt, line 2: blank line"):
        load_echonest(folder, chunk_rows=chunk_rows)
    (folder / "train_triplets.txt").write_text("a\tb\t5\na\tc\n")
    with pytest.raises(DataError, match=r"line 2: missing play count"):
        load_echonest(folder, chunk_rows=chunk_rows)


def test_echonest_trailing_blank_lines_and_missing_file(tmp_path):
    folder = write_triplets(tmp_path, TRIPLETS, tail="\n\n\n")
    assert load_echonest(folder, chunk_rows=2).n_interactions == 3
    with pytest.raises(DataError, match=r"echonest: missing train_triplets\.txt in .*no reliable "
                                         "public download address"):
        load_echonest((tmp_path / "empty").mkdir() or tmp_path / "empty")


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_echonest_fast_and_exact_readers_agree(tmp_path, chunk_rows):
    """The pyarrow reader (used for good files) and the pandas one (used to locate errors)."""
    rows = TRIPLETS * 3 + [("u%d" % k, "s%d" % (k % 4), k) for k in range(20)]
    folder = write_triplets(tmp_path, rows)
    rows_fast, user_ids, cols_fast, song_ids = _read_positives_pyarrow(
        folder / "train_triplets.txt", 5)
    users, songs = _read_positives_pandas(folder / "train_triplets.txt", 5, chunk_rows)
    np.testing.assert_array_equal(user_ids[rows_fast], users.to_numpy(str))
    np.testing.assert_array_equal(song_ids[cols_fast], songs.to_numpy(str))
    np.testing.assert_array_equal(user_ids, pd.unique(users.to_numpy(str)))  # first appearance


def test_echonest_bom_and_crlf(tmp_path):
    folder = tmp_path / "en"
    folder.mkdir()
    text = "\ufeff" + "\r\n".join("\t".join(map(str, row)) for row in TRIPLETS) + "\r\n"
    (folder / "train_triplets.txt").write_bytes(text.encode("utf-8"))
    data = load_echonest(folder)
    np.testing.assert_array_equal(data.user_ids, [TRIPLETS[0][0], TRIPLETS[2][0]])
    np.testing.assert_array_equal(data.item_ids, ["SOAKIMP12A8C130995", "SOBBMDR12A8C13253B"])
