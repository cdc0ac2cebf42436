"""Named data sets: ``cml_tf.data.load("citeulike-t")`` finds, downloads and loads them.

Where the files live: ``data_dir`` when given (the folder holding the data set's own files),
else ``$CML_TF_DATA/<name>/``, else ``~/.cache/cml_tf/<name>/``. So
``CML_TF_DATA=../shared/data`` serves ``citeulike-t`` from ``../shared/data/citeulike-t/``.

When the files are absent and ``download=True``, data sets with a public address are fetched
into that folder (see :mod:`cml_tf.data.download`). The address is a base URL to which each
source file name is appended; override it with ``base_url=...`` or the environment variable
``CML_TF_<NAME>_URL`` (name upper-cased, ``-`` as ``_``; e.g. ``CML_TF_MOVIELENS_1M_URL``),
for a mirror or a local ``file://`` folder holding the same file names.

===============  ==============================================  ===============================
name             source                                          verification
===============  ==============================================  ===============================
citeulike-t      the paper authors' repository (raw files)       sha256 of each file
movielens-100k   files.grouplens.org ml-100k.zip                 sha256 and md5
movielens-1m     files.grouplens.org ml-1m.zip                   sha256 and md5
movielens-20m    files.grouplens.org ml-20m.zip                  md5 (GroupLens's); no sha256
movielens-25m    files.grouplens.org ml-25m.zip                  md5 (GroupLens's); no sha256
bookcrossing     none reliable: put BX-Book-Ratings.csv there
echonest         none reliable: put train_triplets.txt there
===============  ==============================================  ===============================
"""

import dataclasses
import functools
import logging
import os
import pathlib
from typing import Callable, Dict, List, Optional, Tuple

from cml_tf.data import bookcrossing, citeulike, echonest, movielens
from cml_tf.data.download import DownloadError, RemoteFile, fetch
from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions
from cml_tf.data.lines import PathLike

log = logging.getLogger(__name__)

DATA_ENV = "CML_TF_DATA"
_GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to find, fetch and load one named data set.

    Attributes:
      name: the registry name (also the folder name under ``$CML_TF_DATA``).
      loader: ``loader(folder, **kwargs) -> Interactions``.
      required: files that must be in the folder for the data set to count as present.
      expected: every file the loader reads (for messages), required ones included.
      sources: what to download (empty: no public address).
      base_url: default address the source file names are appended to.
      hint: where to get the files by hand.
    """

    name: str
    loader: Callable[..., Interactions]
    required: Tuple[str, ...]
    expected: Tuple[str, ...]
    sources: Tuple[RemoteFile, ...] = ()
    base_url: Optional[str] = None
    hint: str = ""


def _movielens(variant: str, sha256: Optional[str], md5: str, expected: Tuple[str, ...]):
    return DatasetSpec(
        name=f"movielens-{variant}",
        loader=functools.partial(movielens.load_movielens, variant=variant),
        required=expected[:1], expected=expected,
        sources=(RemoteFile(f"ml-{variant}.zip", sha256=sha256, md5=md5, extract=True),),
        base_url=_GROUPLENS,
        hint=f"Get ml-{variant}.zip from {_GROUPLENS}/ and unpack its files there.")


DATASETS: Dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        name="citeulike-t", loader=citeulike.load_citeulike_t,
        required=citeulike.FILES, expected=citeulike.FILES,
        sources=(
            RemoteFile("users.dat", sha256=(
                "02d5d429b2c0362e0ed79f6ef204666b4092563d21493abf4dfb521e8a7078bf")),
            RemoteFile("tag-item.dat", sha256=(
                "e2b80fc0e023780b63c00a397a2d0934eff6dbaf8a1b918778698361dae7ce6b")),
            RemoteFile("tags.dat", sha256=(
                "2f1e6dd94fe216a4453caf67e337c45f73938373b21d2aa3b6d2696387449e76")),
        ),
        base_url="https://raw.githubusercontent.com/changun/CollMetric/master/citeulike-t",
        hint=citeulike.HINT),
    _movielens("100k", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
               "0e33842e24a9c977be4e0107933c0723", ("u.data", "u.item", "u.genre")),
    _movielens("1m", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
               "c4d9eecfca2ab87c1945afe126590906", ("ratings.dat", "movies.dat")),
    _movielens("20m", None, "cd245b17a1ae2cc31bb14903e1204af3", ("ratings.csv", "movies.csv")),
    _movielens("25m", None, "6b51fb2759a8657d3bfcbfc42b592ada", ("ratings.csv", "movies.csv")),
    DatasetSpec(
        name="bookcrossing", loader=bookcrossing.load_bookcrossing,
        required=bookcrossing.FILES, expected=bookcrossing.FILES, hint=bookcrossing.HINT),
    DatasetSpec(
        name="echonest", loader=echonest.load_echonest,
        required=echonest.FILES, expected=echonest.FILES, hint=echonest.HINT),
)}


def names() -> List[str]:
    """The registered data set names."""
    return sorted(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(names())}") from None


def default_data_dir(name: str) -> pathlib.Path:
    """``$CML_TF_DATA/<name>`` when the variable is set, else ``~/.cache/cml_tf/<name>``."""
    root = os.environ.get(DATA_ENV)
    base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "cml_tf"
    return (base / name).expanduser()


def url_env_var(name: str) -> str:
    """The environment variable that overrides a data set's base URL."""
    return "CML_TF_" + name.upper().replace("-", "_") + "_URL"


def ensure_files(spec: DatasetSpec, data_dir: Optional[PathLike] = None, download: bool = True,
                 base_url: Optional[str] = None, progress: bool = True) -> pathlib.Path:
    """The folder holding ``spec``'s files, downloading them first when absent and allowed."""
    folder = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir(spec.name)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{spec.name}: data_dir {folder} is a file, expected a folder holding "
                        f"{', '.join(spec.expected)}")
    for name in spec.required:
        if (folder / name).exists() and not (folder / name).is_file():
            raise DataError(f"{spec.name}: {folder / name} is a folder, expected the file "
                            f"{name}")
    missing = [f for f in spec.required if not (folder / f).is_file()]
    if not missing:
        return folder
    where = (f"put {', '.join(spec.expected)} into {folder} (or set {DATA_ENV} to a folder "
             f"holding {spec.name}/)")
    if not spec.sources:
        raise DataError(f"{spec.name}: missing {', '.join(missing)} in {folder}. {spec.hint} "
                        f"That is: {where}.")
    if not download:
        raise DataError(f"{spec.name}: missing {', '.join(missing)} in {folder} and "
                        f"download=False: {where}. {spec.hint}")
    url = base_url or os.environ.get(url_env_var(spec.name)) or spec.base_url
    log.info("%s: downloading %s from %s into %s", spec.name,
             ", ".join(s.filename for s in spec.sources), url, folder)
    created = _missing_ancestors(folder)
    try:
        for source in spec.sources:
            if not source.extract and (folder / source.filename).is_file():
                continue
            fetch(source, url, folder, progress=progress)
    except DownloadError as error:
        raise DownloadError(
            f"{spec.name}: {error}. Without network access, {where}; or set "
            f"{url_env_var(spec.name)} to a mirror holding "
            f"{', '.join(s.filename for s in spec.sources)}.") from None
    finally:
        for path in created:  # a failed download leaves no empty cache folders behind
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    still_missing = [f for f in spec.required if not (folder / f).is_file()]
    if still_missing:
        raise DataError(f"{spec.name}: downloaded, but {', '.join(still_missing)} is still "
                        f"missing in {folder}")
    return folder


def _missing_ancestors(folder: pathlib.Path) -> List[pathlib.Path]:
    """``folder`` and its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def load(name: str, data_dir: Optional[PathLike] = None, download: bool = True,
         base_url: Optional[str] = None, **loader_kwargs) -> Interactions:
    """Loads the named data set (see the module docstring for names, folders and sources).

    Args:
      name: one of :func:`names` (``"citeulike-t"``, ``"movielens-1m"``, ...).
      data_dir: the folder holding the data set's files (default: see the module docstring).
      download: fetch the files when absent (only for data sets with a public address).
      base_url: override the download address (also ``CML_TF_<NAME>_URL``).
      **loader_kwargs: passed to the data set's loader (e.g. ``min_tag_count=5``,
        ``min_rating=4.0``).
    """
    spec = get_spec(name)
    folder = ensure_files(spec, data_dir, download, base_url)
    return spec.loader(folder, **loader_kwargs)
