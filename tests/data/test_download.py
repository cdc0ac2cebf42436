"""Downloads from real file:// and closed-loopback URLs, checksums, safe extraction, registry."""

import dataclasses
import hashlib
import logging
import os
import pathlib
import socket
import tarfile
import zipfile

import numpy as np
import pytest
from archives import make_tar, make_zip

import cml_tf.data
from cml_tf.data import DataError, registry
from cml_tf.data.download import DownloadError, Limits, RemoteFile, fetch, safe_extract
from cml_tf.data.movielens import GENRES_100K


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: pathlib.Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "data.txt").write_bytes(b"hello\n")
    return folder


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- fetch -------------------------------------------------------------------------------------


def test_fetch_verifies_and_renames(tmp_path, mirror):
    target = tmp_path / "cache" / "set"
    path = fetch(RemoteFile("data.txt", sha256=sha256(b"hello\n"),
                            md5=hashlib.md5(b"hello\n").hexdigest()),
                 mirror.as_uri(), target, progress=False)
    assert path == target / "data.txt" and path.read_bytes() == b"hello\n"
    assert leftovers(target) == []
    assert path.stat().st_mode & 0o444 == 0o444  # readable by others, like any cache file


@pytest.mark.parametrize("field", ["sha256", "md5"])
def test_checksum_mismatch_removes_the_file(tmp_path, mirror, field):
    target = tmp_path / "cache"
    source = RemoteFile("data.txt", **{field: "0" * (64 if field == "sha256" else 32)})
    with pytest.raises(DataError, match=f"data.txt downloaded from .* has {field} .* expected "
                                        "0+; the download was removed"):
        fetch(source, mirror.as_uri(), target, progress=False)
    assert list(target.iterdir()) == []


def test_plain_folder_as_base_url(tmp_path, mirror):
    path = fetch(RemoteFile("data.txt", sha256=sha256(b"hello\n")), str(mirror), tmp_path / "c",
                 progress=False)
    assert path.read_bytes() == b"hello\n"


def test_unpinned_file_is_used_with_a_warning(tmp_path, mirror, caplog):
    with caplog.at_level(logging.WARNING):
        path = fetch(RemoteFile("data.txt"), mirror.as_uri(), tmp_path, progress=False)
    assert path.read_bytes() == b"hello\n"
    assert "NOT verified" in caplog.text and sha256(b"hello\n") in caplog.text


def test_missing_source_and_no_network(tmp_path, mirror, closed_port):
    with pytest.raises(DownloadError, match="could not download file://.*absent.txt"):
        fetch(RemoteFile("absent.txt"), mirror.as_uri(), tmp_path / "a", progress=False)
    assert list((tmp_path / "a").iterdir()) == []
    with pytest.raises(DownloadError, match=f"could not download http://127.0.0.1:{closed_port}"):
        fetch(RemoteFile("x.zip"), f"http://127.0.0.1:{closed_port}", tmp_path / "b",
              progress=False, timeout=5)
    assert list((tmp_path / "b").iterdir()) == []


# ---- archives ----------------------------------------------------------------------------------


def test_extract_zip_strips_the_top_folder(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"ml-x/u.data": b"1", "ml-x/sub/readme": b"2",
                                            "__MACOSX/ml-x/._u.data": b"junk"})
    out = tmp_path / "out"
    safe_extract(archive, out)
    assert (out / "u.data").read_bytes() == b"1"
    assert (out / "sub" / "readme").read_bytes() == b"2"
    assert sorted(p.name for p in out.iterdir()) == ["sub", "u.data"]


def test_extract_tar_with_internal_link(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", {"top/a.txt": b"A", "top/b.txt": b"B"},
                       links=[("top/link.txt", "a.txt", tarfile.SYMTYPE)])
    out = tmp_path / "out"
    safe_extract(archive, out)
    assert (out / "a.txt").read_bytes() == b"A" and (out / "b.txt").read_bytes() == b"B"
    assert (out / "link.txt").read_bytes() == b"A"


@pytest.mark.parametrize("kind, members, links, reason", [
    ("zip", {"ok.txt": b"1", "../evil.txt": b"x"}, (), "'..' in its path"),
    ("zip", {"ok.txt": b"1", "/tmp/evil.txt": b"x"}, (), "absolute path"),
    ("zip", {"ok.txt": b"1", "a\\..\\..\\evil.txt": b"x"}, (), "'..' in its path"),
    ("tar", {"ok.txt": b"1", "../evil.txt": b"x"}, (), "'..' in its path"),
    ("tar", {"ok.txt": b"1", "/abs/evil.txt": b"x"}, (), "absolute path"),
    ("tar", {"ok.txt": b"1"}, [("d/link", "../../outside", tarfile.SYMTYPE)],
     "points outside the folder"),
    ("tar", {"ok.txt": b"1"}, [("link", "/etc/passwd", tarfile.SYMTYPE)], "absolute target"),
    ("tar", {"ok.txt": b"1"}, [("hard", "../outside", tarfile.LNKTYPE)],
     "points outside the folder"),
    ("tar", {"ok.txt": b"1"}, [("fifo", "", tarfile.FIFOTYPE)], "a device or FIFO"),
])
def test_malicious_archives_are_refused_before_writing(tmp_path, kind, members, links, reason):
    archive = (make_zip(tmp_path / "bad.zip", members) if kind == "zip"
               else make_tar(tmp_path / "bad.tar.gz", members, links))
    out = tmp_path / "deep" / "out"
    with pytest.raises(DataError, match=f"refusing to extract .*{reason}"):
        safe_extract(archive, out)
    assert list(out.iterdir()) == []  # nothing written, not even the harmless member
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_escaping_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (0o120777 << 16)
        handle.writestr(info, "../../../etc/passwd")
    with pytest.raises(DataError, match="points outside the folder"):
        safe_extract(archive, tmp_path / "out")


def test_not_an_archive(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"plain text")
    with pytest.raises(DataError, match="neither a zip nor a tar archive"):
        safe_extract(tmp_path / "x.zip", tmp_path / "out")


def test_fetch_archive_extracts_and_deletes_it(tmp_path):
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    archive = make_zip(source_dir / "set.zip", {"set/f.txt": b"F"})
    target = tmp_path / "cache"
    fetch(RemoteFile("set.zip", sha256=sha256(archive.read_bytes()), extract=True),
          source_dir.as_uri(), target, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["f.txt"]


# ---- registry ----------------------------------------------------------------------------------


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No CML_TF_* variables from the outside; HOME in tmp (the default cache goes there)."""
    for key in list(os.environ):
        if key.startswith("CML_TF_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_default_data_dir(isolated, monkeypatch):
    assert registry.default_data_dir("echonest") == isolated / "home" / ".cache" / "cml_tf" / \
        "echonest"
    monkeypatch.setenv("CML_TF_DATA", "/data/sets")
    assert registry.default_data_dir("movielens-1m") == pathlib.Path("/data/sets/movielens-1m")
    assert registry.url_env_var("movielens-100k") == "CML_TF_MOVIELENS_100K_URL"


def test_names_and_unknown_name():
    assert registry.names() == sorted(["citeulike-t", "movielens-100k", "movielens-1m",
                                       "movielens-20m", "movielens-25m", "bookcrossing",
                                       "echonest"])
    with pytest.raises(DataError, match="unknown data set 'netflix'; known: bookcrossing"):
        cml_tf.data.load("netflix")


def test_cml_tf_data_serves_citeulike_without_download(isolated, monkeypatch, shared_data_dir,
                                                       citeulike_dir):
    monkeypatch.setenv("CML_TF_DATA", str(shared_data_dir))
    data = cml_tf.data.load("citeulike-t", download=False, with_features=False)
    assert (data.n_users, data.n_items, data.n_interactions) == (7947, 25975, 134860)


def test_citeulike_download_from_a_mirror_env_var(isolated, monkeypatch, citeulike_dir):
    monkeypatch.setenv("CML_TF_CITEULIKE_T_URL", citeulike_dir.as_uri())
    target = isolated / "sets" / "citeulike-t"
    data = cml_tf.data.load("citeulike-t", data_dir=target, with_features=False)
    assert data.n_interactions == 134860
    assert sorted(p.name for p in target.iterdir()) == ["tag-item.dat", "tags.dat", "users.dat"]


def test_registry_sha256_mismatch(isolated):
    mirror = isolated / "mirror"
    mirror.mkdir()
    for name in ("users.dat", "tag-item.dat", "tags.dat"):
        (mirror / name).write_text("1 0\n")
    target = isolated / "citeulike-t"
    with pytest.raises(DataError, match="users.dat downloaded from .* has sha256 .* expected "
                                        "02d5d429"):
        cml_tf.data.load("citeulike-t", data_dir=target, base_url=mirror.as_uri())
    assert not target.exists()  # nothing kept, not even the empty folder


def test_registry_without_network_says_where_to_put_files(isolated, closed_port):
    target = isolated / "ml"
    with pytest.raises(DownloadError) as error:
        cml_tf.data.load("movielens-100k", data_dir=target,
                         base_url=f"http://127.0.0.1:{closed_port}")
    text = str(error.value)
    assert "could not download" in text
    assert f"put u.data, u.item, u.genre into {target}" in text
    assert "CML_TF_MOVIELENS_100K_URL" in text


def test_registry_download_false_and_no_source(isolated):
    with pytest.raises(DataError, match=r"missing u\.data in .* and download=False: put u\.data, "
                                        r"u\.item, u\.genre into"):
        cml_tf.data.load("movielens-100k", data_dir=isolated / "x", download=False)
    with pytest.raises(DataError, match=r"bookcrossing: missing BX-Book-Ratings\.csv in "
                                        r".*no reliable public download address.*put "
                                        r"BX-Book-Ratings\.csv into"):
        cml_tf.data.load("bookcrossing", data_dir=isolated / "bx")


def ml100k_zip(path):
    ratings = "".join(f"{u}\t{i}\t5\t0\n" for u in (1, 2) for i in range(1, 13))
    items = "".join("|".join([str(i), "t", "", "", ""] + ["0"] * 18 + ["1"]) + "\n"
                    for i in range(1, 13))
    genres = "".join(f"{g}|{k}\n" for k, g in enumerate(GENRES_100K))
    return make_zip(path, {"ml-100k/u.data": ratings, "ml-100k/u.item": items,
                           "ml-100k/u.genre": genres, "ml-100k/README": "x"})


def test_registry_archive_download_and_load(isolated):
    mirror = isolated / "mirror"
    mirror.mkdir()
    archive = ml100k_zip(mirror / "ml-100k.zip")
    target = isolated / "movielens-100k"
    # The pinned sha256 is GroupLens's archive: a different zip is refused and removed.
    with pytest.raises(DataError, match="ml-100k.zip downloaded from .* has sha256"):
        cml_tf.data.load("movielens-100k", data_dir=target, base_url=mirror.as_uri())
    assert not target.exists()
    # With the hash of this archive pinned, it is fetched, unpacked in place, and loaded.
    spec = registry.get_spec("movielens-100k")
    source = dataclasses.replace(spec.sources[0], sha256=sha256(archive.read_bytes()), md5=None)
    spec = dataclasses.replace(spec, sources=(source,))
    folder = registry.ensure_files(spec, target, base_url=mirror.as_uri())
    assert sorted(p.name for p in folder.iterdir()) == ["README", "u.data", "u.genre", "u.item"]
    data = cml_tf.data.load("movielens-100k", data_dir=target)  # now present: no download
    assert (data.n_users, data.n_items, data.n_interactions) == (2, 12, 24)
    np.testing.assert_array_equal(data.item_features.toarray()[:, -1], np.ones(12))


def test_size_limits_let_ordinary_archives_through(tmp_path):
    """A small file of zeros compresses 1000:1 and is fine (the ratio limit starts at 64 MiB);
    members at the per-file limit are fine too."""
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("set/zeros.bin", bytes(4 << 20))
        handle.writestr("set/a.txt", b"A")
    assert archive.stat().st_size < 20_000
    out = tmp_path / "out"
    safe_extract(archive, out, Limits(max_file_bytes=4 << 20, max_total_bytes=(4 << 20) + 1))
    assert (out / "zeros.bin").stat().st_size == 4 << 20 and (out / "a.txt").read_bytes() == b"A"
