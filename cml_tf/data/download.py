"""Downloading data set files: streamed, verified, atomic, and archives unpacked safely.

:func:`fetch` streams ``<base_url>/<filename>`` into a hidden temporary file in the target
folder (with a tqdm progress bar on a terminal), checks its sha256 (and/or md5) digest, and only
then renames it to its final name, so an interrupted or corrupted download never leaves a file
that looks complete. A file whose digest does not match is deleted and :class:`DataError` says
so. When no digest is pinned the file is used unverified and a warning is logged.

Archives (zip, tar, tar.gz, ...) are checked member by member BEFORE anything is written:
absolute paths, ``..`` components, links pointing outside the folder, and device or FIFO
entries are rejected, and so is an archive that would unpack to more than ``max_file_bytes``
in one file (default :data:`MAX_FILE_BYTES`, 16 GiB), ``max_total_bytes`` in all (default
:data:`MAX_TOTAL_BYTES`, 32 GiB), or, above 64 MiB, more than ``max_ratio`` (default
:data:`MAX_RATIO`, 100) times the archive's own size: a "zip bomb". The real data sets are far
inside these limits (MovieLens-25M: 1.1 GB from a 250 MB zip; EchoNest's triplets: 2.9 GB,
ratio about 6). The sizes checked are the members' declared sizes, which bound what is written:
tar members are exactly that long, and Python's zipfile stops at a member's declared size (and
fails its CRC check if the data is longer). Links are checked a second time while unpacking
(Python's tar ``data`` filter, which also catches a chain of links that leaves the folder). A
truncated or corrupt archive raises :class:`DataError` like every other problem here. Archives
are unpacked into a temporary folder next to the target; when the archive holds a single
top-level folder (``ml-100k/u.data``) its contents are moved up, so the target folder ends up
holding the data set's files under their own names. The archive is then deleted.

Any URL that ``urllib`` opens works, including ``file://`` URLs (used by the tests and for local
mirrors); a base "URL" without a scheme is taken as a local folder.
"""

import dataclasses
import hashlib
import logging
import lzma
import math
import os
import pathlib
import posixpath
import re
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from typing import List, Optional, Union

from cml_tf.data.errors import DataError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_CHUNK = 1 << 20
MAX_FILE_BYTES = 16 << 30
MAX_TOTAL_BYTES = 32 << 30
MAX_RATIO = 100
_RATIO_FLOOR = 64 << 20  # small archives may compress better than MAX_RATIO (a file of zeros)
_TAR_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Python >= 3.11.4 / 3.10.12
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a data set's public source.

    Attributes:
      filename: the file's name in the source folder; also its local name (plain files).
      sha256: the expected sha256 hex digest, or None when none could be pinned.
      md5: the expected md5 hex digest (GroupLens publishes md5 sums), or None.
      extract: the file is an archive to unpack into the folder (then deleted).
    """

    filename: str
    sha256: Optional[str] = None
    md5: Optional[str] = None
    extract: bool = False


class DownloadError(DataError):
    """The source could not be reached or read (no network, wrong URL, HTTP error)."""


def join_url(base_url: str, filename: str) -> str:
    """``<base_url>/<filename>``; a base without a scheme is a local folder (a file:// URL)."""
    if "://" not in base_url:
        base_url = pathlib.Path(base_url).expanduser().resolve().as_uri()
    return base_url.rstrip("/") + "/" + filename


def file_digest(path: PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: RemoteFile, base_url: str, folder: PathLike, progress: bool = True,
          timeout: float = 60.0) -> pathlib.Path:
    """Downloads ``source`` from ``base_url`` into ``folder``; returns the local path.

    For an archive (``source.extract``) the return value is ``folder`` after unpacking.
    Raises :class:`DownloadError` when the URL cannot be read and :class:`DataError` when the
    digest does not match (the partial file is removed in both cases).
    """
    folder = pathlib.Path(folder).expanduser()
    url = join_url(base_url, source.filename)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{source.filename}.",
                                             suffix=".part", delete=False)
    except OSError as error:
        raise DataError(f"cannot write to {folder}: {error.strerror or error}") from None
    temp = pathlib.Path(handle.name)
    try:
        with handle:
            digests = _stream(url, handle, source.filename, progress, timeout)
        _verify(source, url, digests)
        if source.extract:
            safe_extract(temp, folder)
            return folder
        final = folder / source.filename
        os.chmod(temp, 0o644)  # temporary files are created 0600
        os.replace(temp, final)
        return final
    finally:
        if temp.exists():
            temp.unlink()


def _stream(url: str, handle, label: str, progress: bool, timeout: float):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec: data URLs
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total and total.isdigit() else None, unit="B",
                      unit_scale=True, unit_divisor=1024, desc=label, leave=False,
                      disable=None if progress else True) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    handle.write(block)
                    sha256.update(block)
                    md5.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, socket.timeout, ConnectionError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"could not download {url}: {reason}") from None
    except OSError as error:  # e.g. a file:// URL to a missing file, disk full
        raise DownloadError(f"could not download {url}: {error.strerror or error}") from None
    except ValueError as error:  # a malformed URL
        raise DownloadError(f"could not download {url}: {error}") from None
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def _verify(source: RemoteFile, url: str, digests) -> None:
    checked = []
    for algorithm in ("sha256", "md5"):
        expected = getattr(source, algorithm)
        if expected is None:
            continue
        if digests[algorithm] != expected.lower():
            raise DataError(
                f"{source.filename} downloaded from {url} has {algorithm} "
                f"{digests[algorithm]}, expected {expected}; the download was removed (a "
                "changed or corrupted source: check the URL, or put a good copy in the folder "
                "yourself)")
        checked.append(algorithm)
    if checked:
        log.info("%s: %s verified", source.filename, " and ".join(checked))
    else:
        log.warning("%s downloaded from %s was NOT verified: no checksum is pinned for it "
                    "(sha256 %s)", source.filename, url, digests["sha256"])


# ---- archives -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Limits:
    """How large an archive may unpack (see the module docstring)."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_ratio: float = MAX_RATIO

    def check(self, archive: pathlib.Path, sizes):
        """DataError when the members' ``(name, size)`` break a limit, naming it."""
        total = 0
        for name, size in sizes:
            if size > self.max_file_bytes:
                raise DataError(f"{archive}: refusing to extract member {name!r}: it unpacks "
                                f"to {_bytes(size)}, above the limit of "
                                f"{_bytes(self.max_file_bytes)} per file (max_file_bytes)")
            total += size
        if total > self.max_total_bytes:
            raise DataError(f"{archive}: refusing to extract: it unpacks to {_bytes(total)}, "
                            f"above the limit of {_bytes(self.max_total_bytes)} in all "
                            "(max_total_bytes)")
        packed = max(archive.stat().st_size, 1)
        if total > _RATIO_FLOOR and total > self.max_ratio * packed:
            raise DataError(f"{archive}: refusing to extract: {_bytes(packed)} unpack to "
                            f"{_bytes(total)}, more than {self.max_ratio:g} times the archive "
                            "(max_ratio; a zip bomb?)")


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    exponent = min(3, int(math.log(n, 1024)))
    return f"{n / 1024 ** exponent:.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def safe_extract(archive: PathLike, folder: PathLike, limits: Limits = Limits()
                 ) -> List[pathlib.Path]:
    """Unpacks a zip or tar archive into ``folder`` safely; returns the files written.

    Every member is checked first (see the module docstring), against ``limits`` too; a single
    top-level folder in the archive is stripped. Existing files of the same name are replaced.
    Raises :class:`DataError` for an unsafe, oversized, truncated or corrupt archive.
    """
    archive = pathlib.Path(archive)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=folder, prefix=".extract-"))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, staging, limits)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, staging, limits)
            else:
                raise DataError(f"{archive} is neither a zip nor a tar archive")
        except _TAR_FILTER_ERROR as error:  # a link that leaves the folder, found on the way
            raise DataError(f"{archive}: refusing to extract: {error}") from None
        except (EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
                NotImplementedError) as error:
            raise DataError(f"{archive}: the archive is truncated, corrupt or of a kind "
                            "Python cannot unpack "
                            f"({str(error) or type(error).__name__})") from None
        except OSError as error:
            raise DataError(f"{archive}: cannot be unpacked into {folder}: "
                            f"{error.strerror or error}") from None
        root = staging
        entries = [p for p in staging.iterdir() if p.name != "__MACOSX"]
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            root = entries[0]
        written = []
        for path in sorted(root.rglob("*")):
            if "__MACOSX" in path.relative_to(staging).parts or (path.is_dir()
                                                                  and not path.is_symlink()):
                continue
            target = folder / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_name(archive: pathlib.Path, name: str) -> str:
    """The member name normalised to a relative POSIX path; DataError if it is unsafe."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise DataError(f"{archive}: refusing to extract member {name!r}: absolute path")
    if ".." in posix.split("/"):
        raise DataError(f"{archive}: refusing to extract member {name!r}: '..' in its path")
    return posixpath.normpath(posix)


def _check_link(archive: pathlib.Path, name: str, target: str, relative_to_member: bool):
    posix = target.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise DataError(f"{archive}: refusing to extract link {name!r} -> {target!r}: absolute "
                        "target")
    base = posixpath.dirname(name) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, posix))
    if resolved == ".." or resolved.startswith("../"):
        raise DataError(f"{archive}: refusing to extract link {name!r} -> {target!r}: it points "
                        "outside the folder")


def _extract_zip(archive: pathlib.Path, staging: pathlib.Path, limits: Limits) -> None:
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        for info in members:
            name = _check_name(archive, info.filename)
            mode = info.external_attr >> 16
            if (mode & 0o170000) == 0o120000:  # a symbolic link stored Unix-style
                _check_link(archive, name, handle.read(info).decode("utf-8", "replace"), True)
        limits.check(archive, ((info.filename, info.file_size) for info in members))
        handle.extractall(staging)


def _extract_tar(archive: pathlib.Path, staging: pathlib.Path, limits: Limits) -> None:
    with tarfile.open(archive, "r:*") as handle:
        members = handle.getmembers()
        limits.check(archive, ((member.name, member.size) for member in members
                               if member.isfile()))
        for member in members:
            name = _check_name(archive, member.name)
            if member.issym():
                _check_link(archive, name, member.linkname, True)
            elif member.islnk():
                _check_link(archive, name, member.linkname, False)
            elif not (member.isfile() or member.isdir()):
                raise DataError(f"{archive}: refusing to extract member {member.name!r}: "
                                "a device or FIFO")
        if hasattr(tarfile, "data_filter"):
            handle.extractall(staging, members=members, filter="data")
        else:  # Python < 3.11.4: the checks above are the protection
            handle.extractall(staging, members=members)  # nosec: members checked above
