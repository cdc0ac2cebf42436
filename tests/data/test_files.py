"""A person's own files: CSV/TSV/Parquet interactions, ready-made splits, feature joins."""

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cml_tf.data import (DataError, Interactions, Split, join_item_features,
                         load_interactions_file, load_split_files)
from cml_tf.data.features import align_feature_rows
from cml_tf.data.files import file_format

# ---- one file ----------------------------------------------------------------------------------


def test_csv_ids_stay_strings(tmp_path):
    path = tmp_path / "likes.csv"
    path.write_text("user,item\n007,NA\n7,null\n007,12\n007,NA\n")
    data = load_interactions_file(path)
    np.testing.assert_array_equal(data.user_ids, ["007", "7"])  # first appearance, "007" != "7"
    np.testing.assert_array_equal(data.item_ids, ["NA", "null", "12"])
    np.testing.assert_array_equal(data.matrix.toarray(), [[1, 0, 1], [0, 1, 0]])  # repeat -> 1
    assert data.name == "likes"


def test_tsv_txt_with_names_weights_crlf_and_bom(tmp_path):
    path = tmp_path / "plays.txt"
    path.write_bytes(b"\xef\xbb\xbfwho\twhat\tplays\r\na\tx\t2\r\na\tx\t3\r\nb\ty\t0.5\r\n")
    data = load_interactions_file(path, user_col="who", item_col="what", weight_col="plays")
    np.testing.assert_array_equal(data.user_ids, ["a", "b"])
    np.testing.assert_allclose(data.matrix.toarray(), [[5, 0], [0, 0.5]])  # weights summed


def test_explicit_separator(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("user;item\nu;i\n")
    assert load_interactions_file(path, sep=";").n_interactions == 1


def test_gzip_csv(tmp_path):
    path = tmp_path / "pairs.csv.gz"
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "x"]}).to_csv(path, index=False)
    assert file_format(path) == "csv"
    assert load_interactions_file(path).n_users == 2


def test_parquet_integer_ids(tmp_path):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"user": [3, 1, 3], "item": [10, 10, 20], "w": [1.0, 2.0, 0.0]}).to_parquet(path)
    data = load_interactions_file(path, weight_col="w")
    np.testing.assert_array_equal(data.user_ids, ["3", "1"])
    np.testing.assert_array_equal(data.item_ids, ["10", "20"])
    assert data.n_interactions == 2  # the zero-weight row is not an interaction


def test_parquet_bad_rows_name_the_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"user": ["a", None], "item": ["x", "y"]}).to_parquet(path)
    with pytest.raises(DataError, match=r"pairs\.parquet, row 2: empty user id"):
        load_interactions_file(path)
    pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "w": [1.0, np.nan]}).to_parquet(path)
    with pytest.raises(DataError, match=r"pairs\.parquet, row 2: missing w"):
        load_interactions_file(path, weight_col="w")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_interactions_file(path)


def test_missing_column_lists_columns(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match=r"pairs\.csv: no column 'user', 'item'; columns found: "
                                         r"'user_id', 'item_id'"):
        load_interactions_file(path)
    pd.DataFrame({"u": ["a"], "i": ["b"]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"no column 'user'.*columns found: 'u', 'i'"):
        load_interactions_file(tmp_path / "p.parquet")
    with pytest.raises(DataError, match="no column 'rating'"):
        load_interactions_file(path, "user_id", "item_id", weight_col="rating")


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"interaction file .*nope\.csv does not exist"):
        load_interactions_file(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv is empty"):
        load_interactions_file(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("user,item\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        load_interactions_file(tmp_path / "header.csv")
    (tmp_path / "pairs.json").write_text("{}")
    with pytest.raises(DataError, match="use .csv, .tsv, .txt or .parquet"):
        load_interactions_file(tmp_path / "pairs.json")


def test_bad_rows_name_the_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("user,item,w\na,x,1\n,y,1\n")
    with pytest.raises(DataError, match=r"pairs\.csv, line 3: empty user id"):
        load_interactions_file(path)
    path.write_text("user,item,w\na,x,1\nb,y,-2\n")
    with pytest.raises(DataError, match=r"pairs\.csv, line 3: w -2.0 is negative"):
        load_interactions_file(path, weight_col="w")
    path.write_text("user,item,w\na,x,1\nb,y,lots\n")
    with pytest.raises(DataError, match=r"pairs\.csv, line 3: w 'lots' is not a number"):
        load_interactions_file(path, weight_col="w")
    path.write_text("user,item\na,x\n\nb,y\n")
    with pytest.raises(DataError, match=r"pairs\.csv, line 3: empty user id"):
        load_interactions_file(path)


# Any text without NUL or surrogates, including quotes, separators and inner line feeds (not a
# bare CR: pandas' CSV writer leaves it unquoted, so such a file is not valid CSV), and not only
# whitespace (surrounding whitespace is removed, so that would be an empty id).
ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
              min_size=1, max_size=8).filter(str.strip)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(ids, ids), min_size=1, max_size=30),
       ext=st.sampled_from([".csv", ".tsv", ".parquet"]))
def test_round_trip(tmp_path, pairs, ext):
    frame = pd.DataFrame(pairs, columns=["user", "item"])
    path = tmp_path / f"pairs{ext}"
    if ext == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="," if ext == ".csv" else "\t", index=False)
    data = load_interactions_file(path)
    stripped = [(user.strip(), item.strip()) for user, item in pairs]
    expected = Interactions.from_pairs(*map(np.array, zip(*stripped)))
    np.testing.assert_array_equal(data.user_ids, expected.user_ids)
    np.testing.assert_array_equal(data.item_ids, expected.item_ids)
    assert set(zip(*[data.user_ids[data.pairs()[0]], data.item_ids[data.pairs()[1]]])) == set(
        stripped)
    assert set(np.unique(data.matrix.data)) == {1.0}


# ---- splits ------------------------------------------------------------------------------------


def write(path, rows, header="user,item"):
    path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    return path


def test_split_files(tmp_path, caplog):
    train = write(tmp_path / "train.csv", [("u1", "a"), ("u2", "b"), ("u1", "c"), ("u3", "a")])
    valid = write(tmp_path / "valid.csv", [("u2", "a"), ("u2", "new1"), ("u2", "new1"),
                                           ("u9", "a"), ("u1", "c")])
    test_frame = pd.DataFrame({"user": ["u3", "u3", "u1", "zz"],
                               "item": ["b", "new2", "new3", "b"]})
    test_frame.to_parquet(tmp_path / "test.parquet")
    with caplog.at_level(logging.WARNING):
        split = load_split_files(train, valid, tmp_path / "test.parquet")
    assert isinstance(split, Split)
    np.testing.assert_array_equal(split.train.user_ids, ["u1", "u2", "u3"])
    np.testing.assert_array_equal(split.train.item_ids, ["a", "b", "c"])
    for held in (split.valid, split.test):
        assert held.matrix.shape == split.train.matrix.shape
        np.testing.assert_array_equal(held.user_ids, split.train.user_ids)
        np.testing.assert_array_equal(held.item_ids, split.train.item_ids)
    np.testing.assert_array_equal(split.valid.matrix.toarray(), [[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(split.test.matrix.toarray(), [[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(split.valid_unseen, [0, 1, 0])  # new1 once, though listed twice
    np.testing.assert_array_equal(split.test_unseen, [1, 0, 1])
    assert split.valid_unseen.dtype == np.int64
    assert split.unknown_users == {"valid": 1, "test": 1}
    assert "1 held-out pairs are also training pairs" in caplog.text
    assert "1 rows name users that are not in the training file" in caplog.text


def test_split_files_train_only(tmp_path):
    split = load_split_files(write(tmp_path / "train.csv", [("u", "i")]))
    assert split.valid is None and split.test is None
    assert split.valid_unseen is None and split.test_unseen is None
    assert split.unknown_users == {}


def test_split_files_errors_name_the_file(tmp_path):
    train = write(tmp_path / "train.csv", [("u", "i")])
    with pytest.raises(DataError, match=r"valid\.csv does not exist"):
        load_split_files(train, tmp_path / "valid.csv")
    write(tmp_path / "test.csv", [("u", "i")], header="person,item")
    with pytest.raises(DataError, match=r"test\.csv: no column 'user'; columns found: "
                                         "'person', 'item'"):
        load_split_files(train, test_path=tmp_path / "test.csv")


# ---- feature joins ------------------------------------------------------------------------------


def test_join_item_features_reorders_fills_and_drops(caplog):
    data = Interactions.from_pairs(["u", "u", "v"], ["b", "a", "z"])  # items: b, a, z
    features = np.array([[1, 0], [0, 2], [3, 3]], np.float32)          # rows for a, b, extra
    with caplog.at_level(logging.WARNING):
        joined = join_item_features(data, ["a", "b", "extra"], features, ["f", "g"])
    np.testing.assert_array_equal(joined.item_features.toarray(), [[0, 2], [1, 0], [0, 0]])
    np.testing.assert_array_equal(joined.feature_names, ["f", "g"])
    assert "1 feature rows name items that are not in the data" in caplog.text
    assert data.item_features is None  # the input is unchanged
    _, dropped = align_feature_rows(data.item_ids, ["a", "b", "extra"], features)
    assert dropped == 1


def test_join_item_features_rejects_repeated_or_mismatched_rows():
    data = Interactions.from_pairs(["u"], ["a"])
    with pytest.raises(DataError, match="feature item ids are not unique"):
        join_item_features(data, ["a", "a"], np.eye(2))
    with pytest.raises(DataError, match="3 feature rows for 2 feature item ids"):
        join_item_features(data, ["a", "b"], np.eye(3))


def test_ids_with_surrounding_spaces_are_stripped_and_counted(tmp_path, caplog):
    """" u1" and "u1" are one person: the catalogue must not double (and recall halve)."""
    train = write(tmp_path / "train.csv", [(" u1 ", "i1"), ("u1", " i1"), ("u2", "i2\t")])
    test = write(tmp_path / "test.csv", [("u2 ", " i1")])
    with caplog.at_level(logging.WARNING):
        split = load_split_files(train, test_path=test)
    np.testing.assert_array_equal(split.train.user_ids, ["u1", "u2"])
    np.testing.assert_array_equal(split.train.item_ids, ["i1", "i2"])
    assert split.train.n_interactions == 2 and split.unknown_users == {"test": 0}
    assert split.test.n_interactions == 1
    lines = [r.getMessage() for r in caplog.records if "spaces" in r.getMessage()]
    assert lines == [f"{train}: removed leading/trailing spaces from 1 user ids and 2 item ids "
                     "(' a ' and 'a' are one id)",
                     f"{test}: removed leading/trailing spaces from 1 user ids and 1 item ids "
                     "(' a ' and 'a' are one id)"]


def test_a_held_out_file_of_strangers_is_refused_some_strangers_are_reported(tmp_path, caplog):
    train = write(tmp_path / "train.csv", [("u1", "a"), ("u2", "b")])
    strangers = write(tmp_path / "test.csv", [("x", "a"), ("y", "b"), ("z", "a")])
    with pytest.raises(DataError, match=r"test file .*test.csv: all 3 rows name users that are "
                                        r"not in the training file \(e.g. 'x', 'y', 'z'\)"):
        load_split_files(train, test_path=strangers)
    some = write(tmp_path / "some.csv", [("x", "a"), ("u1", "b")])
    with caplog.at_level(logging.WARNING):
        split = load_split_files(train, test_path=some)
    assert split.unknown_users == {"test": 1} and split.test.n_interactions == 1
    assert "1 rows name users that are not in the training file; dropped" in caplog.text
