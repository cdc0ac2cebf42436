"""Building zip and tar archives for the download and bad-input tests."""

import io
import tarfile
import zipfile


def make_zip(path, members, compression=zipfile.ZIP_STORED):
    """A zip at ``path`` holding ``members`` (name -> bytes or str)."""
    with zipfile.ZipFile(path, "w", compression) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return path


def make_tar(path, members, links=(), mode="w:gz"):
    """A tar at ``path`` holding ``members`` (name -> bytes) and ``links`` ((name, target,
    tarfile type) for symbolic and hard links, FIFOs, ...)."""
    with tarfile.open(path, mode) as handle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            handle.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            handle.addfile(info)
    return path
