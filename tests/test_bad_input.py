"""Bad input, as a new user makes it: data files, configs, the command line, the export script.

Every case of the tables below (``pytest -m bad_input``) asserts the same four things: the
command exits non-zero (a Python API raises the named exception), stderr holds exactly one line
``error: ...`` and it names the problem, nothing printed a traceback, and no file the user had
was deleted or changed. The cases run in this process (``cml_tf.main.main`` and the export
script's ``main`` parse their own command line; a fresh TensorFlow process costs seconds); a
handful of true command lines at the end run as subprocesses. Serving inputs have their own
cases in the export tests.
"""

import bz2
import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import lzma
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pandas as pd
import pytest
from data.archives import make_tar, make_zip

from cml_tf import main as cli
from cml_tf.data import (DataError, Interactions, load, load_bookcrossing, load_citeulike_t,
                         load_echonest, load_interactions_file, load_movielens, load_split_files,
                         split_per_user)
from cml_tf.data.download import DownloadError, Limits, RemoteFile, fetch, safe_extract
from cml_tf.data.synthetic import make_synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
BAD = pytest.mark.bad_input
# Keep a case cheap if it ever got past its error: one short epoch, no export, no pictures.
QUICK = ["--config.train.epochs=1", "--config.train.verbose=0", "--config.export.enabled=False",
         "--config.viz.enabled=False", "--config.data.synthetic.n_users=300",
         "--config.data.synthetic.n_items=200", "--config.data.synthetic.n_clusters=5",
         "--config.data.synthetic.mean_per_user=12", "--config.model.dim=8"]


# ---- the four checks ---------------------------------------------------------------------------


def fingerprint(folder: pathlib.Path) -> dict:
    """Every file under ``folder`` -> sha256 of its bytes (folders as None)."""
    return {str(path.relative_to(folder)): None if path.is_dir() else
            hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if not path.is_symlink()}


@contextlib.contextmanager
def nothing_lost(folder: pathlib.Path):
    """Asserts that every file and folder present under ``folder`` before is there after,
    unchanged (new files are allowed: a run's workdir)."""
    before = fingerprint(folder)
    yield
    after = fingerprint(folder)
    for name, digest in before.items():
        assert name in after, f"{name} was deleted"
        assert after[name] == digest, f"{name} was changed"


def assert_one_error_line(code, out: str, err: str, expected: str):
    assert code != 0, out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert re.search(expected, errors[0]), errors[0]
    assert "Traceback" not in err and "Traceback" not in out


def assert_one_line_exception(error, expected: str):
    text = str(error.value)
    assert "\n" not in text, text
    assert re.search(expected, text), text


def run_main(argv, capsys):
    code = cli.main(["cml_tf.main", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(argv, expected, user_dir, capsys):
    """``python -m cml_tf.main ARGV``, in this process, passes the four checks."""
    with nothing_lost(user_dir):
        code, out, err = run_main(argv, capsys)
    assert_one_error_line(code, out, err, expected)


def table(cases):
    """parametrize arguments of a table of ``(id, *values)`` rows."""
    return {"argvalues": [case[1:] for case in cases], "ids": [case[0] for case in cases]}


# ---- the user's files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    """train/valid/test.csv of a small planted split, written once."""
    folder = tmp_path_factory.mktemp("good")
    data = make_synthetic(n_users=300, n_items=200, n_clusters=5, mean_per_user=12,
                          with_features=False)
    split = split_per_user(data, seed=0)
    for part in ("train", "valid", "test"):
        users, items = getattr(split, part).pairs()
        pd.DataFrame({"user": data.user_ids[users], "item": data.item_ids[items]}).to_csv(
            folder / f"{part}.csv", index=False)
    return folder


@pytest.fixture
def user_dir(tmp_path, good_files):
    """The user's folder: the good split plus whatever a case writes."""
    folder = tmp_path / "user"
    shutil.copytree(good_files, folder)
    return folder


TRAIN_ROWS = "user,item\n" + "".join(f"u{u},i{(u * 7 + k) % 40}\n" for u in range(40)
                                     for k in range(6))


def gz_truncated(text: str) -> bytes:
    return gzip.compress(text.encode())[:200]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def zipped(text: str, name="train.csv") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as handle:
        handle.writestr(name, text)
    return buffer.getvalue()


# Each case: (id, {file name: content} written into the user's folder (None: a folder), the
# command's data flags ({d} is the user's folder), the expected error).
DATA_CASES = [
    ("train-missing", {}, ["--config.data.train_path={d}/absent.csv"],
     r"data.train_path: .*absent.csv does not exist"),
    ("train-relative-missing", {}, ["--config.data.train_path=nowhere/absent.csv"],
     r"data.train_path: .*nowhere/absent.csv does not exist"),
    ("train-is-a-folder", {"folder.csv": None}, ["--config.data.train_path={d}/folder.csv"],
     r"folder.csv is not a file"),
    ("train-empty", {"e.csv": ""}, ["--config.data.train_path={d}/e.csv"], r"e.csv is empty"),
    ("train-header-only", {"h.csv": "user,item\n"}, ["--config.data.train_path={d}/h.csv"],
     r"has a header but no rows"),
    ("train-no-user-column", {"t.csv": "person,item\np,i\n"},
     ["--config.data.train_path={d}/t.csv"], r"no column 'user'; columns found: 'person'"),
    ("train-no-item-column", {"t.csv": "user,thing\nu,i\n"},
     ["--config.data.train_path={d}/t.csv"], r"no column 'item'"),
    ("train-semicolons", {"t.csv": "user;item\nu;i\n"}, ["--config.data.train_path={d}/t.csv"],
     r"no column 'user', 'item'; columns found: 'user;item'"),
    ("train-tsv-with-commas", {"t.tsv": "user,item\nu,i\n"},
     ["--config.data.train_path={d}/t.tsv"], r"no column 'user'"),
    ("train-json-extension", {"t.json": "{}"}, ["--config.data.train_path={d}/t.json"],
     r"cannot tell the format from the extension '.json'"),
    ("train-no-extension", {"train": TRAIN_ROWS}, ["--config.data.train_path={d}/train"],
     r"cannot tell the format from the extension '\(none\)'"),
    ("train-empty-user-id", {"t.csv": "user,item\nu1,i1\n,i2\n"},
     ["--config.data.train_path={d}/t.csv"], r"t.csv, line 3: empty user id"),
    ("train-empty-item-id", {"t.csv": "user,item\nu1,\n"},
     ["--config.data.train_path={d}/t.csv"], r"line 2: empty item id"),
    ("train-blank-id", {"t.csv": "user,item\nu1,i1\n   ,i2\n"},
     ["--config.data.train_path={d}/t.csv"], r"line 3: empty user id"),
    ("train-blank-line", {"t.csv": "user,item\nu1,i1\n\nu2,i2\n"},
     ["--config.data.train_path={d}/t.csv"], r"line 3: empty user id"),
    ("train-bad-utf8", {"t.csv": b"user,item\nu\xff\xfe,i1\n"},
     ["--config.data.train_path={d}/t.csv"], r"t.csv: cannot be parsed: .*utf-8"),
    ("train-too-many-fields", {"t.csv": "user,item\nu1,i1\nu2,i2,x\n"},
     ["--config.data.train_path={d}/t.csv"], r"cannot be parsed: .*Expected 2 fields"),
    ("train-unclosed-quote", {"t.csv": 'user,item\n"u1,i1\nu2,i2\n'},
     ["--config.data.train_path={d}/t.csv"], r"cannot be parsed: .*EOF inside string"),
    ("train-truncated-gz", {"t.csv.gz": gz_truncated(TRAIN_ROWS * 20)},
     ["--config.data.train_path={d}/t.csv.gz"], r"t.csv.gz: cannot be read: .*truncated"),
    ("train-truncated-bz2", {"t.csv.bz2": bz2.compress(TRAIN_ROWS.encode() * 20)[:300]},
     ["--config.data.train_path={d}/t.csv.bz2"], r"t.csv.bz2: cannot be read"),
    ("train-truncated-xz", {"t.csv.xz": lzma.compress(TRAIN_ROWS.encode() * 20)[:300]},
     ["--config.data.train_path={d}/t.csv.xz"], r"t.csv.xz: cannot be read"),
    ("train-not-gzip", {"t.csv.gz": TRAIN_ROWS}, ["--config.data.train_path={d}/t.csv.gz"],
     r"t.csv.gz: cannot be read: Not a gzipped file"),
    ("train-truncated-zip", {"t.csv.zip": zipped(TRAIN_ROWS)[:150]},
     ["--config.data.train_path={d}/t.csv.zip"], r"t.csv.zip: cannot be read"),
    ("train-parquet-garbage", {"t.parquet": b"PAR1 not really"},
     ["--config.data.train_path={d}/t.parquet"], r"not a readable Parquet file"),
    ("train-parquet-no-column",
     {"t.parquet": parquet_bytes(pd.DataFrame({"a": ["u"], "b": ["i"]}))},
     ["--config.data.train_path={d}/t.parquet"], r"no column 'user', 'item'; columns found"),
    ("train-parquet-null-id",
     {"t.parquet": parquet_bytes(pd.DataFrame({"user": ["u", None], "item": ["i", "j"]}))},
     ["--config.data.train_path={d}/t.parquet"], r"t.parquet, row 2: empty user id"),
    ("train-parquet-truncated",
     {"t.parquet": parquet_bytes(pd.DataFrame({"user": ["u"] * 50, "item": ["i"] * 50}))[:-40]},
     ["--config.data.train_path={d}/t.parquet"], r"not a readable Parquet file"),
    ("user-col-absent", {}, ["--config.data.train_path={d}/train.csv",
                             "--config.data.user_col=customer"], r"no column 'customer'"),
    ("item-col-absent", {}, ["--config.data.train_path={d}/train.csv",
                             "--config.data.item_col=product"], r"no column 'product'"),
    ("valid-missing", {}, ["--config.data.train_path={d}/train.csv",
                           "--config.data.valid_path={d}/nope.csv"],
     r"data.valid_path: .*nope.csv does not exist"),
    ("test-missing", {}, ["--config.data.train_path={d}/train.csv",
                          "--config.data.test_path={d}/nope.csv"],
     r"data.test_path: .*nope.csv does not exist"),
    ("valid-is-a-folder", {"v": None}, ["--config.data.train_path={d}/train.csv",
                                        "--config.data.valid_path={d}/v"], r"v is not a file"),
    ("test-empty", {"t.csv": ""}, ["--config.data.train_path={d}/train.csv",
                                   "--config.data.test_path={d}/t.csv"], r"t.csv is empty"),
    ("valid-no-item-column", {"v.csv": "user,what\nu0,i1\n"},
     ["--config.data.train_path={d}/train.csv", "--config.data.valid_path={d}/v.csv"],
     r"v.csv: no column 'item'"),
    ("test-truncated-gz", {"t.csv.gz": gz_truncated(TRAIN_ROWS * 20)},
     ["--config.data.train_path={d}/train.csv", "--config.data.test_path={d}/t.csv.gz"],
     r"t.csv.gz: cannot be read"),
    ("test-bad-utf8", {"t.csv": b"user,item\nu0,\xff\n"},
     ["--config.data.train_path={d}/train.csv", "--config.data.test_path={d}/t.csv"],
     r"cannot be parsed"),
    ("test-all-users-unknown", {"t.csv": "user,item\nx1,i1\nx2,i2\nx3,i1\n"},
     ["--config.data.train_path={d}/train.csv", "--config.data.valid_path={d}/valid.csv",
      "--config.data.test_path={d}/t.csv"],
     r"test file .*t.csv: all 3 rows name users that are not in the training file"),
    ("valid-all-users-unknown", {"v.csv": "user,item\nnobody,i1\n"},
     ["--config.data.train_path={d}/train.csv", "--config.data.valid_path={d}/v.csv"],
     r"valid file .*v.csv: all 1 rows name users that are not in the training file"),
    ("test-other-user-column", {"t.csv": "user,item\n0,i1\n1,i2\n"},
     ["--config.data.train_path={d}/train.csv", "--config.data.test_path={d}/t.csv"],
     r"all 2 rows name users .*same 'user' column"),
    ("split-paper-with-held-out", {}, ["--config.data.train_path={d}/train.csv",
                                       "--config.data.valid_path={d}/valid.csv",
                                       "--config.data.split=paper"],
     r"data.split='paper' splits data.train_path itself; it cannot use data.valid_path"),
    ("split-unknown", {}, ["--config.data.train_path={d}/train.csv",
                           "--config.data.split=random"],
     r"data.split must be one of auto, paper, none, got 'random'"),
    ("features-without-source", {}, ["--config.data.train_path={d}/train.csv",
                                     "--config.data.use_features=True"],
     r"data.use_features with your own split needs data.features_from"),
    ("features-from-unknown-set", {}, ["--config.data.train_path={d}/train.csv",
                                       "--config.data.use_features=True",
                                       "--config.data.features_from=netflix"],
     r"unknown data set 'netflix'"),
    ("features-from-absent-set", {"empty": None},
     ["--config.data.train_path={d}/train.csv", "--config.data.use_features=True",
      "--config.data.features_from=citeulike-t", "--config.data.data_dir={d}/empty",
      "--config.data.download=False"], r"citeulike-t: missing users.dat.* download=False"),
    ("name-files-without-train-path", {}, ["--config.data.name=files"],
     r"data.name='files' needs data.train_path"),
    ("name-unknown", {}, ["--config.data.name=netflix"], r"unknown data set 'netflix'; known"),
    ("named-set-absent-no-download", {"empty": None},
     ["--config.data.name=movielens-1m", "--config.data.data_dir={d}/empty",
      "--config.data.download=False"], r"movielens-1m: missing ratings.dat .*download=False"),
    ("named-set-without-source", {"empty": None},
     ["--config.data.name=bookcrossing", "--config.data.data_dir={d}/empty"],
     r"bookcrossing: missing BX-Book-Ratings.csv"),
    ("named-set-file-is-a-folder", {"cu/users.dat": None, "cu/tags.dat": "a\n",
                                    "cu/tag-item.dat": "1 0\n"},
     ["--config.data.name=citeulike-t", "--config.data.data_dir={d}/cu"],
     r"citeulike-t: .*cu/users.dat is a folder, expected the file users.dat"),
    ("named-set-data-dir-is-a-file", {"dir.txt": "x"},
     ["--config.data.name=citeulike-t", "--config.data.data_dir={d}/dir.txt"],
     r"citeulike-t: data_dir .*dir.txt is a file, expected a folder"),
    ("named-set-bad-file", {"cu/users.dat": "2 0 x\n", "cu/tags.dat": "a\n",
                            "cu/tag-item.dat": "1 0\n"},
     ["--config.data.name=citeulike-t", "--config.data.data_dir={d}/cu"],
     r"users.dat, line 1: malformed token 'x'"),
    ("catalogue-smaller-than-k", {"small.csv": TRAIN_ROWS},
     ["--config.data.train_path={d}/small.csv"], r"eval.ks asks for K=100 but there are only 40"),
]


@BAD
@pytest.mark.parametrize("files, flags, expected", **table(DATA_CASES))
def test_bad_data_files(files, flags, expected, user_dir, tmp_path, capsys):
    for name, content in files.items():
        path = user_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    argv = [flag.format(d=user_dir) for flag in flags] + QUICK + [f"--workdir={tmp_path/'run'}"]
    refused(argv, expected, user_dir, capsys)


# ---- config files and overrides ----------------------------------------------------------------


CONFIG_FILES = {
    "syntax.py": ("def get_config(:\n", r"config file .*syntax.py, line 1: invalid syntax"),
    "name_error.py": ("import ml_collections\nVALUE = undefined_name\n",
                      r"name_error.py, line 2: NameError: name 'undefined_name'"),
    "raises.py": ("import ml_collections\n\ndef get_config():\n    return 1 / 0\n",
                  r"raises.py, line 4: ZeroDivisionError: division by zero"),
    "no_function.py": ("CONFIG = {}\n", r"no_function.py defines no get_config\(\) function"),
    "returns_none.py": ("def get_config():\n    pass\n",
                        r"get_config\(\) returned NoneType, expected an ml_collections"),
    "returns_dict.py": ("def get_config():\n    return {'seed': 0}\n",
                        r"get_config\(\) returned dict"),
    "bad_import.py": ("import no_such_module_here\n",
                      r"bad_import.py, line 1: ModuleNotFoundError: No module named"),
    "needs_argument.py": ("import ml_collections\n\ndef get_config(size):\n"
                          "    return ml_collections.ConfigDict()\n",
                          r"TypeError: get_config\(\) missing 1 required positional argument"),
    "null_byte.py": ("x = 1\x00\n", r"null_byte.py.*(null bytes|cannot be read)"),
    "latin1.py": (b'x = "caf\xe9"\n', r"latin1.py, line 1: .*(utf-8|decode)"),
    "typo_in_file.py": ("from cml_tf.config import get_config as base\n\n"
                        "def get_config():\n    config = base()\n"
                        "    config.train.epoch = 3\n    return config\n",
                        r"typo_in_file.py sets the unknown key 'train.epoch' \(did you mean "
                        r"'train.epochs'\?\)"),
    "unknown_section.py": ("from cml_tf.config import get_config as base\n\n"
                           "def get_config():\n    config = base()\n"
                           "    config.trainer = base().train\n    return config\n",
                           r"sets the unknown key 'trainer' \(did you mean 'train'\?\)"),
}


@BAD
@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_broken_config_files_name_the_file_and_line(name, user_dir, tmp_path, capsys):
    source, expected = CONFIG_FILES[name]
    path = user_dir / name
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source)
    refused([f"--config={path}", f"--workdir={tmp_path / 'run'}"], expected, user_dir, capsys)
    assert not (tmp_path / "run").exists()  # refused before anything is written


FLAG_CASES = [
    ("config-missing", ["--config={d}/absent.py"], r"config file .*absent.py does not exist"),
    ("config-folder", ["--config={d}"], r"config file .* is a folder, expected a .py file"),
    ("config-empty-value", ["--config="], r"--config needs a file"),
    ("config-space-form-missing", ["--config", "{d}/absent.py"], r"absent.py does not exist"),
    ("override-typo-with-config-file",
     ["--config={repo}/configs/default.py", "--config.train.epoch=3"],
     r"unknown key 'epoch' in --config.train.epoch: Did you mean \"epochs\""),
    ("override-typo-citeulike-config",
     ["--config={repo}/configs/citeulike_t.py", "--config.model.margn=1"],
     r"unknown key 'margn' in --config.model.margn: Did you mean \"margin\""),
    ("override-typo-default", ["--config.train.epoch=3"],
     r"unknown key 'epoch' in --config.train.epoch"),
    ("override-unknown-section", ["--config.trian.epochs=3"],
     r"unknown key 'trian' in --config.trian.epochs: Did you mean \"train\""),
    ("override-unknown-top-key", ["--config.sed=1"], r"unknown key 'sed' in --config.sed"),
    ("override-no-hint", ["--config.model.zzzzzz=1"],
     r"unknown key 'zzzzzz' in --config.model.zzzzzz \(every key: cml_tf/config"),
    ("override-deep-unknown", ["--config.data.synthetic.n_user=3"],
     r"unknown key 'n_user' in --config.data.synthetic.n_user: .*n_users"),
    ("override-negated-unknown", ["--noconfig.data.downlod"],
     r"unknown key 'downlod' in --noconfig.data.downlod"),
    ("override-not-an-int", ["--config.train.epochs=many"],
     r"--config.train.epochs=many: invalid literal for int"),
    ("override-float-for-int", ["--config.train.epochs=1.5"], r"--config.train.epochs=1.5"),
    ("override-not-a-bool", ["--config.data.download=maybe"], r"Non-boolean argument"),
    ("override-not-a-float", ["--config.model.margin=wide"], r"--config.model.margin=wide"),
    ("override-section-value", ["--config.train=3"], r"--config.train=3: .*not a dict"),
    ("override-without-value", ["--config.train.epochs"],
     r"Missing value for flag --config.train.epochs"),
    ("override-empty-value", ["--config.train.epochs="], r"--config.train.epochs=:"),
    ("override-placeholder-int", ["--config.export.scann.num_leaves=x"],
     r"--config.export.scann.num_leaves=x"),
    ("override-bad-tuple", ["--config.eval.ks=(1,"], r"--config.eval.ks=\(1,"),
    ("unknown-flag", ["--workdr=x"], r"Unknown command line flag 'workdr'. Did you mean: workdir"),
    ("unknown-flag-no-hint", ["--frobnicate"], r"Unknown command line flag 'frobnicate'"),
    ("positional-argument", ["configs/default.py"],
     r"unexpected arguments: configs/default.py \(flags are written --name=value\)"),
    ("overwrite-not-a-bool", ["--overwrite=maybe"], r"--overwrite=maybe"),
]


@BAD
@pytest.mark.parametrize("flags, expected", **table(FLAG_CASES))
def test_bad_flags_and_overrides(flags, expected, user_dir, tmp_path, capsys):
    argv = [flag.format(d=user_dir, repo=REPO) for flag in flags]
    refused([f"--workdir={tmp_path / 'run'}"] + argv, expected, user_dir, capsys)
    assert not (tmp_path / "run").exists()  # refused before anything is written


VALUE_CASES = [
    ("dim-zero", ["--config.model.dim=0"], r"dim must be > 0, got 0"),
    ("dim-negative", ["--config.model.dim=-4"], r"dim must be > 0, got -4"),
    ("margin-zero", ["--config.model.margin=0"], r"margin must be > 0"),
    ("margin-negative", ["--config.model.margin=-1"], r"margin must be > 0"),
    ("margin-nan", ["--config.model.margin=nan"], r"margin must be > 0, got nan"),
    ("negatives-zero", ["--config.model.num_negatives=0"], r"num_negatives must be > 0"),
    ("batch-zero", ["--config.train.batch_size=0"], r"train.batch_size must be >= 1"),
    ("epochs-zero", ["--config.train.epochs=0"], r"train.epochs must be >= 1"),
    ("eval-every-zero", ["--config.train.eval_every=0"], r"train.eval_every must be >= 1"),
    ("learning-rate-zero", ["--config.train.learning_rate=0"], r"learning_rate must be > 0"),
    ("learning-rate-negative", ["--config.train.learning_rate=-0.1"],
     r"learning_rate must be > 0"),
    ("learning-rate-inf", ["--config.train.learning_rate=inf"], r"learning_rate must be > 0"),
    ("learning-rate-nan", ["--config.train.learning_rate=nan"], r"learning_rate must be > 0"),
    ("lr-decay-one", ["--config.train.lr_decay=1.0"], r"train.lr_decay must be in \[0, 1\)"),
    ("lr-decay-negative", ["--config.train.lr_decay=-0.5"], r"train.lr_decay must be in \[0, 1\)"),
    ("epochs-a-word", ["--config.train.epochs=many"], r"--config.train.epochs=many"),
    ("ks-empty", ["--config.eval.ks=()"], r"eval.ks must be whole numbers >= 1"),
    ("ks-zero", ["--config.eval.ks=(0,)"], r"eval.ks must be whole numbers >= 1"),
    ("ks-a-word", ["--config.eval.ks=abc"], r"eval.ks must be whole numbers .*got \('abc',\)"),
    ("ks-a-fraction", ["--config.eval.ks=(10,2.5)"], r"eval.ks must be whole numbers >= 1"),
    ("ks-above-items", ["--config.eval.ks=(10,5000)"], r"K=5000 but there are only 200 items"),
    ("export-k-above-items", ["--config.export.enabled=True", "--config.export.k=5000"],
     r"export.k=5000 is larger than the number of items \(200\)"),
    ("model-unknown", ["--config.model.name=svd"], r"unknown model.name 'svd'; known: 'cml'"),
    ("optimizer-unknown", ["--config.train.optimizer=sgdd"], r"unknown optimizer 'sgdd'"),
    ("monitor-unknown", ["--config.train.monitor=recall@5000"],
     r"monitor 'recall@5000' is not among the metrics"),
    ("split-unknown-named", ["--config.data.split=half"], r"data.split must be one of"),
]


MODEL_KEY_FILES = {  # model.* is open to each model's own keys: the model refuses a foreign one
    "typo": ("    config.model.margn = 1.0\n",
             r"model.margn is not a setting of model.name='cml'; did you mean model.margin\?"),
    "other-model": ("    config.model.name = 'wrmf'\n    config.model.alpha = 1.0\n",
                    r"model\.\w+ is not a setting of model.name='wrmf' \(its settings: alpha, "),
}


@BAD
@pytest.mark.parametrize("name", sorted(MODEL_KEY_FILES))
def test_a_model_key_the_model_does_not_take_is_one_line(name, user_dir, tmp_path, capsys):
    body, expected = MODEL_KEY_FILES[name]
    path = user_dir / f"model_{name}.py"
    path.write_text("from cml_tf.config import get_config as base\n\ndef get_config():\n"
                    "    config = base()\n" + body + "    return config\n")
    refused([f"--config={path}", *QUICK, f"--workdir={tmp_path / 'run'}"], expected, user_dir,
            capsys)
    assert not (tmp_path / "run").exists()


@BAD
@pytest.mark.parametrize("flags, expected", **table(VALUE_CASES))
def test_bad_config_values(flags, expected, user_dir, tmp_path, capsys):
    refused(QUICK + flags + [f"--workdir={tmp_path / 'run'}"], expected, user_dir, capsys)


def workdir_is_a_file(tmp_path):
    (tmp_path / "user" / "run.txt").write_text("mine")
    return tmp_path / "user" / "run.txt", r"--workdir .*run.txt: .*run.txt is a file, expected a"


def workdir_under_a_file(tmp_path):
    (tmp_path / "user" / "notes.txt").write_text("mine")
    return tmp_path / "user" / "notes.txt" / "run", r"notes.txt/run: .*notes.txt is a file"


def workdir_of_someone_else(tmp_path):
    (tmp_path / "user" / "important.txt").write_text("keep me")
    return tmp_path / "user", r"is not empty and holds no run of ours"


def workdir_finished(tmp_path):
    run = tmp_path / "user" / "finished"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text("{}")
    return run, r"already holds a finished run \(metrics.json\); pass --overwrite"


@BAD
@pytest.mark.parametrize("make", [workdir_is_a_file, workdir_under_a_file,
                                  workdir_of_someone_else, workdir_finished])
def test_bad_workdirs(make, user_dir, tmp_path, capsys):
    workdir, expected = make(tmp_path)
    refused(QUICK + [f"--workdir={workdir}"], expected, user_dir, capsys)


# ---- the loaders, called from Python -------------------------------------------------------------


def citeulike_folder(folder, users="2 0 3\n1 2\n", tag_item="3 0 1 2\n1 3\n2 0 3\n",
                     tags="alpha\nbeta\ngamma\n"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("users.dat", users), ("tag-item.dat", tag_item), ("tags.dat", tags)):
        if text is not None:
            (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


def users_dat_folder(folder):
    citeulike_folder(folder, users=None)
    (folder / "users.dat").mkdir()
    return folder


def ml_1m_folder(folder, ratings):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(ratings)
    return folder


def ml_csv_folder(folder, ratings, movies=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings)
    if movies is not None:
        (folder / "movies.csv").write_text(movies)
    return folder


def bx_folder(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "BX-Book-Ratings.csv").write_bytes(text.encode("latin-1"))
    return folder


def echonest_folder(folder, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_triplets.txt").write_text(text)
    return folder


def interactions_file(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


TRIPLETS = "".join(f"user{u}\tsong{s}\t{5 + s}\n" for u in range(3) for s in range(4))

LOADER_CASES = [
    ("citeulike-negative-id", lambda d: load_citeulike_t(citeulike_folder(d, users="1 -4\n")),
     r"users.dat, line 1: negative id -4"),
    ("citeulike-malformed", lambda d: load_citeulike_t(citeulike_folder(d, users="1 x\n")),
     r"line 1: malformed token 'x'"),
    ("citeulike-count-mismatch",
     lambda d: load_citeulike_t(citeulike_folder(d, users="2 0 3\n3 1 2\n")),
     r"line 2: the count prefix says 3 ids follow but the line has 2"),
    ("citeulike-blank-line",
     lambda d: load_citeulike_t(citeulike_folder(d, users="1 0\n\n1 2\n")),
     r"line 2: blank line"),
    ("citeulike-empty", lambda d: load_citeulike_t(citeulike_folder(d, users="")),
     r"users.dat is empty"),
    ("citeulike-no-items", lambda d: load_citeulike_t(citeulike_folder(d, users="0\n0\n")),
     r"no user has any item"),
    ("citeulike-id-too-large",
     lambda d: load_citeulike_t(citeulike_folder(d, users="1 12345678901234567890\n")),
     r"id '12345678901234567890' \(token 2\) is too large"),
    ("citeulike-bad-utf8",
     lambda d: load_citeulike_t(citeulike_folder(d, tags=b"alpha\nbe\xfft\ngamma\n")),
     r"tags.dat, line 2: byte 0xff at column 3 is not valid utf-8"),
    ("citeulike-tag-names-short",
     lambda d: load_citeulike_t(citeulike_folder(d, tags="alpha\n")),
     r"1 tag names but .*3 tag lines"),
    ("citeulike-tag-item-malformed",
     lambda d: load_citeulike_t(citeulike_folder(d, tag_item="1 0\n1 x\n1 3\n")),
     r"tag-item.dat, line 2: malformed token 'x'"),
    ("citeulike-missing-tags", lambda d: load_citeulike_t(citeulike_folder(d, tags=None)),
     r"missing tags.dat in"),
    ("citeulike-users-dat-is-a-folder", lambda d: load_citeulike_t(users_dat_folder(d)),
     r"users.dat is a folder, expected the file users.dat"),
    ("citeulike-folder-missing", lambda d: load_citeulike_t(d / "nowhere"),
     r"folder .*nowhere does not exist; expected it to hold users.dat"),
    ("registry-users-dat-is-a-folder",  # not "could not download"
     lambda d: load("citeulike-t", data_dir=users_dat_folder(d), base_url=d.as_uri()),
     r"citeulike-t: .*users.dat is a folder, expected the file users.dat"),
    ("registry-unknown-name", lambda d: load("netflix"), r"unknown data set 'netflix'"),
    ("registry-no-download",
     lambda d: load("movielens-100k", data_dir=d / "x", download=False),
     r"missing u.data in .* and download=False"),
    ("movielens-folder-missing", lambda d: load_movielens(d / "nowhere"),
     r"movielens: folder .*nowhere does not exist"),
    ("movielens-no-ratings-file", lambda d: (d.mkdir(), load_movielens(d)),
     r"none of u.data \(100k\), ratings.dat \(1m\), ratings.csv"),
    ("movielens-1m-bad-rating",
     lambda d: load_movielens(ml_1m_folder(d, "1::10::5::0\n1::11::x::0\n")),
     r"ratings.dat, line 2: rating 'x' is not a number"),
    ("movielens-1m-short-line",
     lambda d: load_movielens(ml_1m_folder(d, "1::10::5::0\n1::11\n")),
     r"ratings.dat, line 2: missing rating"),
    ("movielens-csv-no-column",
     lambda d: load_movielens(ml_csv_folder(d, "userId,movieId,score\n1,2,5\n")),
     r"no column 'rating'"),
    ("movielens-nothing-positive",
     lambda d: load_movielens(ml_csv_folder(d, "userId,movieId,rating,timestamp\n1,2,1,0\n")),
     r"no rating >= 4.0 \(min_rating\)"),
    ("movielens-bad-movies-file",
     lambda d: load_movielens(ml_csv_folder(
         d, "userId,movieId,rating,timestamp\n" + "".join(f"1,{i},5,0\n" for i in range(12)),
         "movieId,title,genres\nx,T,Drama\n")),
     r"movies.csv, line 2: movie id 'x' is not an integer"),
    ("movielens-unknown-variant", lambda d: load_movielens(d, variant="5m"),
     r"unknown MovieLens variant '5m'"),
    ("bookcrossing-no-column",
     lambda d: load_bookcrossing(bx_folder(d, '"User-ID";"ISBN"\n"1";"x"\n')),
     r"no column 'Book-Rating'"),
    ("bookcrossing-bad-rating",
     lambda d: load_bookcrossing(bx_folder(d, '"User-ID";"ISBN";"Book-Rating"\n"1";"x";"ten"\n')),
     r"line 2: rating 'ten' is not a number"),
    ("bookcrossing-empty-user",
     lambda d: load_bookcrossing(bx_folder(d, '"User-ID";"ISBN";"Book-Rating"\n"";"x";"5"\n')),
     r"line 2: empty User-ID"),
    ("bookcrossing-header-only",
     lambda d: load_bookcrossing(bx_folder(d, '"User-ID";"ISBN";"Book-Rating"\n')),
     r"has no rows"),
    ("bookcrossing-folder-missing", lambda d: load_bookcrossing(d / "nowhere"),
     r"bookcrossing: folder .*nowhere does not exist"),
    ("echonest-non-integer-count",
     lambda d: load_echonest(echonest_folder(d, TRIPLETS + "u\ts\tmany\n")),
     r"line 13: play count 'many' is not an integer"),
    ("echonest-short-line", lambda d: load_echonest(echonest_folder(d, TRIPLETS + "u\ts\n")),
     r"line 13: missing play count"),
    ("echonest-blank-line-inside",
     lambda d: load_echonest(echonest_folder(d, TRIPLETS.replace("\n", "\n\n", 1))),
     r"line 2: blank line"),
    ("echonest-nothing-positive",
     lambda d: load_echonest(echonest_folder(d, "u\ts\t1\n"), min_play_count=5),
     r"no play count >= 5 \(min_play_count\)"),
    ("echonest-file-missing", lambda d: load_echonest(d),
     r"echonest: folder .* does not exist|missing train_triplets.txt"),
    ("files-negative-weight",
     lambda d: load_interactions_file(interactions_file(d, "w.csv", "user,item,w\nu,i,-1\n"),
                                      weight_col="w"), r"w.csv, line 2: w -1.0 is negative"),
    ("files-text-weight",
     lambda d: load_interactions_file(interactions_file(d, "w.csv", "user,item,w\nu,i,lots\n"),
                                      weight_col="w"), r"w.csv, line 2: w 'lots' is not a number"),
    ("files-infinite-weight",
     lambda d: load_interactions_file(interactions_file(d, "w.csv", "user,item,w\nu,i,inf\n"),
                                      weight_col="w"), r"w.csv, line 2: w 'inf' is not a number"),
    ("files-missing", lambda d: load_interactions_file(d / "absent.csv"),
     r"interaction file .*absent.csv does not exist"),
    ("split-files-all-unknown",
     lambda d: load_split_files(interactions_file(d, "a.csv", "user,item\nu,i\n"),
                                test_path=interactions_file(d, "b.csv", "user,item\nv,i\n")),
     r"test file .*b.csv: all 1 rows name users that are not in the training file"),
    ("from-pairs-unequal", lambda d: Interactions.from_pairs(["u", "v"], ["i"]),
     r"users and items must be 1-D and equally long"),
    ("from-pairs-unknown-id",
     lambda d: Interactions.from_pairs(["u"], ["i"], user_ids=["v"]),
     r"1 user ids are not in the given user_ids"),
]


@BAD
@pytest.mark.parametrize("call, expected", **table(LOADER_CASES))
def test_loaders_raise_one_line_data_errors(call, expected, tmp_path):
    folder = tmp_path / "data"
    with pytest.raises(DataError) as error:
        call(folder)
    assert_one_line_exception(error, expected)


# ---- archives and downloads -------------------------------------------------------------------


def zip_with(path, members):
    return make_zip(path, members, zipfile.ZIP_DEFLATED)


def symlink_chain(d):
    # Each link alone stays inside the folder; followed one after the other they leave it.
    return make_tar(d / "chain.tar.gz", {"ok.txt": b"1"}, [
        ("dir1/up", "..", tarfile.SYMTYPE),
        ("dir1/up/up2", "..", tarfile.SYMTYPE),
        ("dir1/up/up2/escape", "../../etc", tarfile.SYMTYPE)])


def truncated_tar_gz(d):
    archive = make_tar(d / "t.tar.gz", {"big.txt": os.urandom(200_000)})
    archive.write_bytes(archive.read_bytes()[:50_000])
    return archive


def truncated_tar(d):
    archive = make_tar(d / "t.tar", {"big.txt": b"x" * 100_000}, mode="w")
    archive.write_bytes(archive.read_bytes()[:30_000])
    return archive


def corrupt_zip(d):
    archive = zip_with(d / "c.zip", {"a.txt": os.urandom(5000)})
    data = bytearray(archive.read_bytes())
    data[60:120] = bytes(60)  # inside the deflated data; the directory is intact
    archive.write_bytes(bytes(data))
    return archive


ARCHIVE_CASES = [
    ("zip-dot-dot", lambda d: zip_with(d / "a.zip", {"ok": b"1", "../evil": b"x"}),
     Limits(), r"refusing to extract member '../evil': '..' in its path"),
    ("zip-absolute", lambda d: zip_with(d / "a.zip", {"/tmp/evil": b"x"}), Limits(),
     r"absolute path"),
    ("tar-dot-dot", lambda d: make_tar(d / "a.tar.gz", {"../evil": b"x"}), Limits(),
     r"'..' in its path"),
    ("tar-absolute", lambda d: make_tar(d / "a.tar.gz", {"/abs/evil": b"x"}), Limits(),
     r"absolute path"),
    ("tar-symlink-outside",
     lambda d: make_tar(d / "a.tar.gz", {}, [("l", "../../x", tarfile.SYMTYPE)]), Limits(),
     r"points outside the folder"),
    ("tar-symlink-absolute",
     lambda d: make_tar(d / "a.tar.gz", {}, [("l", "/etc/passwd", tarfile.SYMTYPE)]),
     Limits(), r"absolute target"),
    ("tar-hardlink-outside",
     lambda d: make_tar(d / "a.tar.gz", {}, [("h", "../x", tarfile.LNKTYPE)]), Limits(),
     r"points outside the folder"),
    ("tar-fifo", lambda d: make_tar(d / "a.tar.gz", {}, [("f", "", tarfile.FIFOTYPE)]),
     Limits(), r"a device or FIFO"),
    ("tar-symlink-chain", symlink_chain, Limits(),
     r"chain.tar.gz: refusing to extract: .*outside the destination"),
    ("tar-gz-truncated", truncated_tar_gz, Limits(), r"t.tar.gz: the archive is truncated"),
    ("tar-truncated", truncated_tar, Limits(), r"t.tar: the archive is truncated"),
    ("zip-corrupt-data", corrupt_zip, Limits(), r"c.zip: the archive is truncated, corrupt"),
    ("not-an-archive", lambda d: (d / "x.zip").write_bytes(b"plain") and d / "x.zip", Limits(),
     r"neither a zip nor a tar archive"),
    ("zip-over-file-limit",
     lambda d: zip_with(d / "a.zip", {"small": b"1" * 100, "big": b"2" * 5000}),
     Limits(max_file_bytes=4000),
     r"member 'big': it unpacks to 4.9 KiB, above the limit of 3.9 KiB per file "
     r"\(max_file_bytes\)"),
    ("tar-over-file-limit", lambda d: make_tar(d / "a.tar.gz", {"big": b"2" * 5000}),
     Limits(max_file_bytes=4000), r"above the limit of 3.9 KiB per file"),
    ("zip-over-total-limit",
     lambda d: zip_with(d / "a.zip", {f"f{i}": b"3" * 3000 for i in range(4)}),
     Limits(max_total_bytes=10_000),
     r"it unpacks to 11.7 KiB, above the limit of 9.8 KiB in all \(max_total_bytes\)"),
]


@BAD
@pytest.mark.parametrize("make, limits, expected", **table(ARCHIVE_CASES))
def test_bad_archives_are_refused(make, limits, expected, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    archive = make(source)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("a file the user had")
    with nothing_lost(target):
        with pytest.raises(DataError) as error:
            safe_extract(archive, target, limits)
    assert_one_line_exception(error, expected)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # nothing written
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil").exists()


@BAD
def test_a_zip_bomb_is_refused_by_the_default_limits(tmp_path):
    """200 MB of zeros in a zip of 200 KB: the ratio limit stops it before a byte is written."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        with handle.open("zeros.bin", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(200):
                member.write(block)
    assert archive.stat().st_size < 1_000_000
    target = tmp_path / "target"
    with pytest.raises(DataError) as error:
        safe_extract(archive, target)
    assert_one_line_exception(error, r"bomb.zip: refusing to extract: 19\d.\d KiB unpack to "
                                     r"200.0 MiB, more than 100 times the archive \(max_ratio")
    assert [p.name for p in target.iterdir()] == []


DOWNLOAD_CASES = [
    ("checksum-mismatch", lambda m, t: fetch(RemoteFile("data.txt", sha256="0" * 64), m, t,
                                             progress=False),
     DataError, r"data.txt downloaded from .* has sha256 .*, expected 0000"),
    ("missing-remote-file", lambda m, t: fetch(RemoteFile("absent.txt"), m, t, progress=False),
     DownloadError, r"could not download .*absent.txt"),
    ("malformed-url", lambda m, t: fetch(RemoteFile("x"), "http://[::1", t, progress=False),
     DownloadError, r"could not download"),
    ("archive-truncated-download",
     lambda m, t: fetch(RemoteFile("t.tar.gz", extract=True), m, t, progress=False),
     DataError, r"the archive is truncated"),
]


@BAD
@pytest.mark.parametrize("call, kind, expected", **table(DOWNLOAD_CASES))
def test_bad_downloads(call, kind, expected, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.txt").write_text("hello\n")
    truncated_tar_gz(mirror)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with nothing_lost(target):
        with pytest.raises(kind) as error:
            call(mirror.as_uri(), target)
    assert_one_line_exception(error, expected)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # no partial download


# ---- the export script ---------------------------------------------------------------------------


def export_script():
    spec = importlib.util.spec_from_file_location("export_script", REPO / "export" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return export_script()


def a_workdir(folder: pathlib.Path, good_files, **data) -> pathlib.Path:
    """A workdir's config.json (no checkpoints: every case fails before they are read)."""
    from cml_tf.config import get_config  # pylint: disable=import-outside-toplevel
    config = get_config()
    config.data.update({"train_path": str(good_files / "train.csv"), **data})
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(config.to_json_best_effort(indent=2))
    return folder


EXPORT_CASES = [
    ("no-workdir", [], r"--workdir is required"),
    ("workdir-missing", ["--workdir={t}/nowhere"], r"--workdir .*nowhere is not a folder"),
    ("workdir-without-config", ["--workdir={u}"], r"holds no config.json: not a training workdir"),
    ("config-json-garbage", ["--workdir={g}"], r"garbled/config.json cannot be read as JSON"),
    ("k-zero", ["--workdir={w}", "--k=0"], r"--k must be at least 1, got 0"),
    ("k-negative", ["--workdir={w}", "--k=-3"], r"--k must be at least 1, got -3"),
    ("k-not-an-int", ["--workdir={w}", "--k=ten"], r"--k=ten: .*(int|integer)"),
    ("version-negative", ["--workdir={w}", "--version=-1"], r"--version must be at least 0"),
    ("report-users-zero", ["--workdir={w}", "--report_users=0"],
     r"--report_users must be at least 1"),
    ("index-unknown", ["--workdir={w}", "--index=faiss"], r"--index=faiss: value should be one"),
    ("checkpoint-unknown", ["--workdir={w}", "--checkpoint=first"], r"--checkpoint=first"),
    ("index-options-bad-json", ["--workdir={w}", "--index_options={{num_leaves: 3}}"],
     r"--index_options is not valid JSON \(Expecting property name"),
    ("index-options-list", ["--workdir={w}", "--index_options=[1, 2]"],
     r"--index_options must be a JSON object"),
    ("index-options-unknown-key", ["--workdir={w}", '--index_options={{"num_leafs": 40}}'],
     r"--index_options: scann takes no parameter 'num_leafs' \(did you mean 'num_leaves'\?\)"),
    ("index-options-wrong-index",
     ["--workdir={w}", "--index=partitioned", '--index_options={{"num_leaves": 40}}'],
     r"partitioned takes no parameter 'num_leaves'.*num_partitions"),
    ("index-options-brute-force",
     ["--workdir={w}", "--index=brute_force", '--index_options={{"tree": true}}'],
     r"brute_force takes no parameter 'tree'; its parameters: \(none\)"),
    ("index-options-wrong-type", ["--workdir={w}", '--index_options={{"num_leaves": "many"}}'],
     r"--index_options: num_leaves must be int, got 'many'"),
    ("index-options-bool-for-int", ["--workdir={w}", '--index_options={{"num_leaves": true}}'],
     r"num_leaves must be int, got True"),
    ("export-dir-is-a-file", ["--workdir={w}", "--export_dir={u}/model.txt"],
     r"--export_dir .*model.txt is a file, expected a folder"),
    ("unknown-flag", ["--workdir={w}", "--indx=scann"], r"Unknown command line flag 'indx'"),
    ("positional", ["--workdir={w}", "now"], r"unexpected arguments: now"),
    ("data-moved-away", ["--workdir={m}"],
     r"cannot load the data of the run in .*moved \(its config.json\): data.train_path: "
     r".*gone.csv does not exist"),
    ("data-relative-path", ["--workdir={r}"],
     r"data.train_path: train.csv does not exist \(relative to the current folder"),
]


@BAD
@pytest.mark.parametrize("flags, expected", **table(EXPORT_CASES))
def test_bad_export_flags(flags, expected, script, user_dir, good_files, tmp_path, capsys,
                          monkeypatch):
    workdir = a_workdir(user_dir / "run", good_files)
    (user_dir / "model.txt").write_text("not a folder")
    a_workdir(user_dir / "moved", good_files, train_path=str(user_dir / "gone.csv"))
    a_workdir(user_dir / "relative", good_files, train_path="train.csv")
    (user_dir / "garbled").mkdir()
    (user_dir / "garbled" / "config.json").write_text("{not json")
    monkeypatch.chdir(tmp_path)  # relative paths are not read from the user's folder
    argv = [flag.format(w=workdir, u=user_dir, t=tmp_path, m=user_dir / "moved",
                        r=user_dir / "relative", g=user_dir / "garbled") for flag in flags]
    with nothing_lost(user_dir):
        code = script.main(["export.py", *argv])
        captured = capsys.readouterr()
    assert_one_error_line(code, captured.out, captured.err, expected)
    assert not (workdir / "saved_model").exists()


# ---- help, and true command lines ----------------------------------------------------------------


def test_help_lists_the_config_sections_and_exits_0(capsys):
    code = cli.main(["cml_tf.main", "--help"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cml_tf/config.py" in out and "--config.<section>.<key>=VALUE" in out
    sections = re.findall(r"^  (\w+) ", out.split("config sections")[1], re.MULTILINE)
    assert sections == sorted(sections)
    assert set(sections) >= {"data", "model", "train", "eval", "viz", "export", "seed"}
    assert re.search(r"^  train +.*epochs", out, re.MULTILINE)
    code = cli.main(["cml_tf.main", f"--config={REPO / 'configs' / 'citeulike_t.py'}", "-h"])
    assert code == 0 and "config sections of " in capsys.readouterr().out


def test_export_script_help_exits_0(script, capsys):
    assert script.main(["export.py", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--index_options" in out and "--workdir" in out and "undefok" not in out


def run(command, cwd, env=None):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


COMMAND_LINES = [
    ("typo-with-config-file", ["-m", "cml_tf.main", "--config=configs/default.py",
                               "--config.train.epoch=3"],
     r"unknown key 'epoch' in --config.train.epoch: Did you mean \"epochs\""),
    ("config-file-missing", ["-m", "cml_tf.main", "--config=configs/absent.py"],
     r"config file configs/absent.py does not exist"),
    ("config-file-syntax", ["-m", "cml_tf.main", "--config={u}/bad.py"],
     r"bad.py, line 2: '\(' was never closed"),
    ("export-k-zero", ["export/export.py", "--workdir={u}/run", "--k=0"],
     r"--k must be at least 1"),
    ("export-bad-json", ["export/export.py", "--workdir={u}/run", "--index_options={{x"],
     r"--index_options is not valid JSON"),
]


@BAD
@pytest.mark.parametrize("command, expected", **table(COMMAND_LINES))
def test_true_command_lines(command, expected, user_dir, good_files, tmp_path):
    (user_dir / "bad.py").write_text("def get_config():\n    return (\n")
    a_workdir(user_dir / "run", good_files)
    with nothing_lost(user_dir):
        done = run([sys.executable, *[part.format(u=user_dir) for part in command]], cwd=REPO)
    assert_one_error_line(done.returncode, done.stdout, done.stderr, expected)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # nothing else either


def test_help_on_the_command_line_exits_0():
    done = run([sys.executable, "-m", "cml_tf.main", "--help"], cwd=REPO)
    assert done.returncode == 0 and "config sections" in done.stdout and not done.stderr


# ---- input that is fine: a person's own file, end to end ---------------------------------------


@pytest.mark.slow
def test_one_own_file_from_a_relative_path_is_split_evaluated_and_re_exported_from_elsewhere(
        good_files, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    likes = pd.concat([pd.read_csv(good_files / f"{part}.csv", dtype=str)
                       for part in ("train", "valid", "test")])
    likes.to_csv(project / "data" / "likes.csv", index=False)
    monkeypatch.chdir(project)
    code = cli.main(["cml_tf.main", f"--config={REPO / 'configs' / 'own_data.py'}",
                     "--config.data.train_path=data/likes.csv", "--workdir=run",
                     "--config.train.epochs=2", "--config.train.eval_every=1",
                     "--config.train.batch_size=1024", "--config.model.dim=8",
                     "--config.train.verbose=0", "--config.export.enabled=False",
                     "--config.viz.enabled=False"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((project / "run" / "config.json").read_text())
    assert saved["data"]["train_path"] == str(project / "data" / "likes.csv")
    metrics = json.loads((project / "run" / "metrics.json").read_text())
    assert metrics["valid"]["recall@50"] > 0 and metrics["test"]["recall@50"] > 0
    assert metrics["data"]["train_interactions"] < len(likes)  # split, not trained on all
    # Re-exported by the real command from another folder, without TensorFlow's start-up noise.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, str(REPO / "export" / "export.py"),
                           f"--workdir={project / 'run'}", "--index=brute_force", "--k=10",
                           "--report_users=20", "--report_queries=2"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exported {project / 'run' / 'saved_model' / '1'}" in done.stdout
    assert "cuInit" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]


# ---- the README a new user reads -----------------------------------------------------------------


README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_links_stay_inside_the_repository():
    """A clone has no ../shared: every relative link must name a file of the repository."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    relative = [t for t in targets if "://" not in t]
    assert relative, "no relative links found"
    for target in relative:
        path = (REPO / target).resolve()
        assert path.is_relative_to(REPO) and path.exists(), target


def test_readme_documents_the_test_data_variable_and_every_config_key_it_names():
    assert "CML_TF_SHARED_DATA" in README
    from cml_tf.config import get_config  # pylint: disable=import-outside-toplevel
    config = get_config()
    for key in sorted(set(re.findall(r"--config\.([a-z_]+(?:\.[a-z_]+)+)", README))):
        node = config
        for part in key.split("."):
            assert part in node, key
            node = node[part]
