"""citeulike-t loader: the real data's exact counts, and every kind of bad input on tiny files."""

import hashlib
import logging

import numpy as np
import pytest

from cml_tf.data import DataError, Interactions, join_item_features
from cml_tf.data.citeulike import (load_citeulike_t, load_citeulike_t_tag_features,
                                   read_count_lists)

SHA256 = {
    "users.dat": "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf",
    "tag-item.dat": "e2b80fc0e023780b63c00a397a2d0934eff6dbaf8a1b918778698361dae7ce6b",
    "tags.dat": "2f1e6dd94fe216a4453caf67e337c45f73938373b21d2aa3b6d2696387449e76",
}


# ---- the published data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def citeulike(citeulike_dir) -> Interactions:
    return load_citeulike_t(citeulike_dir)


def test_shared_files_are_the_published_ones(citeulike_dir):
    for name, expected in SHA256.items():
        assert hashlib.sha256((citeulike_dir / name).read_bytes()).hexdigest() == expected


def test_real_counts(citeulike):
    assert citeulike.n_users == 7947
    assert citeulike.n_items == 25975
    assert citeulike.n_interactions == 134860
    assert citeulike.name == "citeulike-t"
    assert set(np.unique(citeulike.matrix.data)) == {1.0}


def test_real_ids_follow_lines_and_item_numbers(citeulike, citeulike_dir):
    assert list(citeulike.user_ids[:3]) == ["0", "1", "2"]
    assert citeulike.user_ids[-1] == "7946"
    np.testing.assert_array_equal(citeulike.item_ids, np.arange(25975).astype(str))
    # User 0's row holds exactly the ids after the count on line 1 (never the count itself).
    first = [int(t) for t in (citeulike_dir / "users.dat").read_text().split("\n")[0].split()]
    row = citeulike.matrix[0].indices
    np.testing.assert_array_equal(np.sort(row), np.sort(first[1:]))
    assert len(row) == first[0]


def test_real_tag_features(citeulike, citeulike_dir):
    features = citeulike.item_features
    assert features.shape == (25975, len(citeulike.feature_names))
    assert set(np.unique(features.data)) == {1.0}
    # Every kept tag is on at least 5 items.
    assert np.bincount(features.indices, minlength=features.shape[1]).min() >= 5
    names = (citeulike_dir / "tags.dat").read_text().split("\n")
    lines = (citeulike_dir / "tag-item.dat").read_text().split("\n")
    # Column 0 is the first tag line with at least 5 items (the count prefix is not an item).
    first = next(t for t, line in enumerate(lines) if len(set(line.split()[1:])) >= 5)
    assert citeulike.feature_names[0] == names[first]
    tagged = sorted({int(t) for t in lines[first].split()[1:]})
    np.testing.assert_array_equal(np.flatnonzero(features[:, 0].toarray().ravel()), tagged)


def test_real_without_features(citeulike_dir):
    data = load_citeulike_t(citeulike_dir, with_features=False)
    assert data.item_features is None
    assert (data.n_users, data.n_items, data.n_interactions) == (7947, 25975, 134860)


# ---- tiny files ---------------------------------------------------------------------------------


def write(folder, users="2 0 3\n1 2\n0\n", tag_item="3 0 1 2\n1 3\n2 0 3\n",
          tags="alpha\nbeta\ngamma\n", mode="w"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("users.dat", users), ("tag-item.dat", tag_item), ("tags.dat", tags)):
        if text is None:
            continue
        if isinstance(text, bytes):
            (folder / name).write_bytes(text)
        else:
            (folder / name).write_text(text, newline="")
    return folder


def test_small_folder(tmp_path):
    data = load_citeulike_t(write(tmp_path), min_tag_count=2)
    assert (data.n_users, data.n_items, data.n_interactions) == (3, 4, 3)
    np.testing.assert_array_equal(data.user_ids, ["0", "1", "2"])
    np.testing.assert_array_equal(data.item_ids, ["0", "1", "2", "3"])
    np.testing.assert_array_equal(data.matrix.toarray(),
                                  [[1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]])
    # Tags on >= 2 items: alpha (0,1,2) and gamma (0,3); beta (3) is dropped.
    np.testing.assert_array_equal(data.feature_names, ["alpha", "gamma"])
    np.testing.assert_array_equal(data.item_features.toarray(),
                                  [[1, 1], [1, 0], [1, 0], [0, 1]])


def test_min_tag_count(tmp_path):
    folder = write(tmp_path)
    _, features, names = load_citeulike_t_tag_features(folder, min_tag_count=1)
    assert list(names) == ["alpha", "beta", "gamma"] and features.shape == (4, 3)
    _, features, names = load_citeulike_t_tag_features(folder, min_tag_count=3)
    assert list(names) == ["alpha"]
    with pytest.raises(DataError, match="min_tag_count"):
        load_citeulike_t_tag_features(folder, min_tag_count=4)


def test_crlf_bom_and_no_final_newline(tmp_path):
    plain = load_citeulike_t(write(tmp_path / "a"), min_tag_count=1)
    bom = b"\xef\xbb\xbf"
    crlf = load_citeulike_t(write(
        tmp_path / "b", users=bom + b"2 0 3\r\n1 2\r\n0",
        tag_item=bom + b"3 0 1 2\r\n1 3\r\n2 0 3\r\n", tags=bom + b"alpha\r\nbeta\r\ngamma"),
        min_tag_count=1)
    assert (plain.matrix != crlf.matrix).nnz == 0
    np.testing.assert_array_equal(plain.feature_names, crlf.feature_names)
    assert (plain.item_features != crlf.item_features).nnz == 0


def test_tab_separated_and_extra_spaces_are_fine(tmp_path):
    data = load_citeulike_t(write(tmp_path, users="2\t0  3 \n 1 2\n0\n"), with_features=False)
    assert data.n_interactions == 3


@pytest.mark.parametrize("users, line, message", [
    ("2 0 3\n1 x\n", 2, "malformed token 'x'"),
    ("2 0 3\n1 2.5\n", 2, "malformed token '2.5'"),
    ("2 0 3\n1 -4\n", 2, "negative id -4"),
    ("2 0 3\n3 1 2\n", 2, "count prefix says 3 ids follow but the line has 2"),
    ("1 0 3\n", 1, "count prefix says 1 ids follow but the line has 2"),
    ("2 0 3\n\n1 2\n", 2, "blank line"),
    ("a b\n", 1, "malformed token 'a'"),
    ("2 0 99999999999999999\n", 1, "too large"),
])
def test_bad_users_file(tmp_path, users, line, message):
    folder = write(tmp_path, users=users)
    with pytest.raises(DataError) as error:
        load_citeulike_t(folder)
    text = str(error.value)
    assert str(folder / "users.dat") in text
    assert f"line {line}:" in text
    assert message in text


def test_bad_tag_file_names_file_and_line(tmp_path):
    folder = write(tmp_path, tag_item="3 0 1 2\n2 3\n")
    with pytest.raises(DataError, match=r"tag-item\.dat, line 2: the count prefix says 2"):
        load_citeulike_t(folder)


def test_invalid_utf8_names_the_line(tmp_path):
    folder = write(tmp_path, tags=b"alpha\nbe\xfft\ngamma\n")
    with pytest.raises(DataError, match=r"tags\.dat, line 2: byte 0xff at column 3"):
        load_citeulike_t(folder)


def test_tag_names_must_match_tag_lines(tmp_path):
    folder = write(tmp_path, tags="alpha\nbeta\n")
    with pytest.raises(DataError, match="2 tag names but .* 3 tag lines"):
        load_citeulike_t(folder)


@pytest.mark.parametrize("content", ["", "\n\n", "\r\n"])
def test_empty_users_file(tmp_path, content):
    folder = write(tmp_path, users=content)
    with pytest.raises(DataError, match=r"users\.dat is empty"):
        load_citeulike_t(folder)


def test_users_without_any_item(tmp_path):
    with pytest.raises(DataError, match="no user has any item"):
        load_citeulike_t(write(tmp_path, users="0\n0\n"))


def test_missing_folder_names_path_and_files(tmp_path):
    with pytest.raises(DataError) as error:
        load_citeulike_t(tmp_path / "nowhere")
    text = str(error.value)
    assert str(tmp_path / "nowhere") in text and "does not exist" in text
    for name in ("users.dat", "tag-item.dat", "tags.dat"):
        assert name in text


def test_missing_file_names_it(tmp_path):
    folder = write(tmp_path, tags=None)
    with pytest.raises(DataError, match=r"missing tags\.dat in .*expected files: users\.dat, "
                                         r"tag-item\.dat, tags\.dat"):
        load_citeulike_t(folder)
    # Without features the tag files are not needed.
    assert load_citeulike_t(folder, with_features=False).n_users == 3


def test_repeated_item_in_a_line_counts_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_citeulike_t(write(tmp_path, users="3 1 1 2\n"), with_features=False)
    assert data.n_interactions == 2 and data.matrix.max() == 1
    assert "repeated" in caplog.text


def test_tagged_items_beyond_the_user_items_are_dropped_with_a_warning(tmp_path, caplog):
    folder = write(tmp_path, users="1 0\n1 1\n", tag_item="2 0 5\n1 1\n1 2\n")
    with caplog.at_level(logging.WARNING):
        data = load_citeulike_t(folder, min_tag_count=1)
    assert data.n_items == 2 and data.item_features.shape == (2, 3)
    assert "4 feature rows name items that are not in the data" in caplog.text


def test_read_count_lists(tmp_path):
    (tmp_path / "x.dat").write_text("2 5 6\n0\n1 7\n")
    lengths, ids = read_count_lists(tmp_path / "x.dat")
    np.testing.assert_array_equal(lengths, [2, 0, 1])
    np.testing.assert_array_equal(ids, [5, 6, 7])


def test_tag_features_join_onto_a_user_split(tmp_path):
    """A user-supplied split holds some items in its own order: features follow its ids."""
    folder = write(tmp_path)
    feature_ids, features, names = load_citeulike_t_tag_features(folder, min_tag_count=1)
    split = Interactions.from_pairs(["u1", "u2"], ["3", "9"])  # item 9 has no tags
    joined = join_item_features(split, feature_ids, features, names)
    np.testing.assert_array_equal(joined.item_features.toarray(), [[0, 1, 1], [0, 0, 0]])


@pytest.mark.parametrize("big", [10**6, 12345678901])
def test_a_large_id_is_one_item_not_an_array_size(tmp_path, big):
    """Ids are identities: an id of 10^10 must not make a catalogue of 10^10 items (745 GiB of
    id strings); only a numbering 0..max keeps the items nobody saved."""
    folder = write(tmp_path, users=f"2 0 {big}\n1 5\n", tag_item=f"2 0 {big}\n1 5\n1 {big}\n",
                   tags="alpha\nbeta\ngamma\n")
    data = load_citeulike_t(folder, min_tag_count=1)
    np.testing.assert_array_equal(data.item_ids, ["0", "5", str(big)])
    np.testing.assert_array_equal(data.matrix.toarray(), [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(data.item_features.toarray(), [[1, 0, 0], [0, 1, 0],
                                                                  [1, 0, 1]])
    feature_ids, features, _ = load_citeulike_t_tag_features(folder, min_tag_count=1)
    np.testing.assert_array_equal(feature_ids, ["0", "5", str(big)])
    assert features.shape == (3, 3)


def test_a_numbering_keeps_items_nobody_saved(tmp_path):
    data = load_citeulike_t(write(tmp_path, users="2 0 4\n1 2\n"), with_features=False)
    np.testing.assert_array_equal(data.item_ids, ["0", "1", "2", "3", "4"])  # 3 of 0..4 saved
