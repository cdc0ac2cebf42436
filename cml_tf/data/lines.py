"""Reading small text files robustly, with errors that name the file and the line.

Every loader reads its text through these helpers so that all of them accept the same
variations of a file: a UTF-8 byte-order mark at the start is dropped, Windows (CRLF) and old Mac
(CR) line endings read like Unix ones, and trailing blank lines (a final newline, or several) are
ignored. Bytes that are not valid in the file's encoding raise :class:`DataError` naming the file
and the 1-based line, and so does anything the caller rejects through :func:`line_error`.

Formats that are latin-1 (MovieLens 1M ``movies.dat``, MovieLens 100k ``u.item``, Book-Crossing)
pass ``encoding="latin-1"``, which decodes any byte.
"""

import os
import pathlib
from typing import Iterable, List, Sequence, Union

from cml_tf.data.errors import DataError

PathLike = Union[str, os.PathLike]

_BOM = b"\xef\xbb\xbf"


def line_error(path: PathLike, lineno: int, message: str) -> DataError:
    """A :class:`DataError` reading ``<path>, line <lineno>: <message>`` (lineno is 1-based)."""
    return DataError(f"{path}, line {lineno}: {message}")


def require_folder(folder: PathLike, expected: Sequence[str], dataset: str,
                   hint: str = "") -> pathlib.Path:
    """Checks that ``folder`` exists and holds every file in ``expected``; returns it as a Path.

    The error names the folder, the data set, every expected file (marking the missing ones) and
    ``hint`` (where to get the files), so that a person knows exactly what to put where.
    """
    folder = pathlib.Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"{dataset}: folder {folder} does not exist; expected it to hold "
            f"{', '.join(expected)}.{(' ' + hint) if hint else ''}")
    not_files = [name for name in expected if (folder / name).exists()
                 and not (folder / name).is_file()]
    if not_files:
        raise DataError(f"{dataset}: {folder / not_files[0]} is a folder, expected the file "
                        f"{not_files[0]}")
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{dataset}: missing {', '.join(missing)} in {folder} (expected files: "
            f"{', '.join(expected)}).{(' ' + hint) if hint else ''}")
    return folder


def require_file(path: PathLike, what: str = "file") -> pathlib.Path:
    """Checks that ``path`` is an existing, non-empty file; returns it as a Path."""
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty")
    return path


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """The whole file as text: BOM dropped, CRLF and CR turned into LF.

    Raises :class:`DataError` when the file is missing or its bytes are not valid ``encoding``
    (the message gives the line and column of the first bad byte).
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, expected a file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        lineno = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise line_error(
            path, lineno,
            f"byte 0x{data[error.start]:02x} at column {column} is not valid {encoding}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path: PathLike, encoding: str = "utf-8", allow_empty: bool = False) -> List[str]:
    """The file's lines (without line endings); trailing blank lines are dropped.

    Line ``k`` of the file (1-based) is element ``k - 1``, so callers can report line numbers.
    Only ``\\n`` (after CRLF/CR normalisation) separates lines: form feeds or Unicode line
    separators inside a line do not split it. An empty file (or one with only blank lines) raises
    :class:`DataError` unless ``allow_empty``.
    """
    lines = read_text(path, encoding).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines and not allow_empty:
        raise DataError(f"{path} is empty")
    return lines


def describe_columns(columns: Iterable) -> str:
    """Columns found in a table, quoted, for error messages."""
    return ", ".join(repr(str(c)) for c in columns) or "(none)"

