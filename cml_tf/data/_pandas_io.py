"""Reading delimited rating tables with pandas, with errors that name file and line.

The tables are read with pandas' C parser (vectorised; 20M rows in seconds) with
``skip_blank_lines=False``, so data row ``k`` (0-based) is file line ``k + 1 + header_lines`` and
an error can point at the exact line. Blank lines at the end of a file are ignored; a blank or
short line elsewhere is an error.
"""

import io
import lzma
import os
import pathlib
import zipfile
import zlib
from typing import Dict, Optional, Sequence, Union

import numpy as np
import pandas as pd

from cml_tf.data.errors import DataError
from cml_tf.data.lines import describe_columns, line_error, require_file

PathLike = Union[str, os.PathLike]

_BOM = b"\xef\xbb\xbf"


def read_table(path: PathLike, *, sep: str, names: Optional[Sequence[str]] = None,
               usecols: Optional[Sequence] = None, dtype=None, encoding: str = "utf-8",
               quoting: Optional[int] = None, what: str = "file") -> pd.DataFrame:
    """A delimited file as a DataFrame (``names`` given: no header line; else the first line).

    ``sep`` may be a multi-character separator such as MovieLens 1M's ``::``: it is then
    replaced by a tab in memory so that the fast C parser can still read the file.
    """
    path = require_file(path, what)
    source: Union[pathlib.Path, io.BytesIO] = path
    if len(sep) > 1:
        data = path.read_bytes()
        if b"\t" in data:
            raise DataError(f"{path}: contains tab characters; expected fields separated by "
                            f"{sep!r}")
        source, sep = io.BytesIO(data.replace(sep.encode(encoding), b"\t")), "\t"
    if encoding.lower().replace("-", "").replace("_", "") == "utf8":
        encoding = "utf-8-sig"  # drops a BOM
    kwargs: Dict = dict(sep=sep, encoding=encoding, skip_blank_lines=False, dtype=dtype,
                        usecols=usecols, engine="c", keep_default_na=False,
                        na_values=[""])
    if quoting is not None:
        kwargs["quoting"] = quoting
    if names is not None:
        kwargs.update(header=None, names=list(names))
    try:
        frame = pd.read_csv(source, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path} is empty") from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise DataError(f"{what} {path}: cannot be parsed: {message}") from None
    except (EOFError, OSError, lzma.LZMAError, zlib.error, zipfile.BadZipFile) as error:
        # A truncated or corrupt compressed file (.gz, .bz2, .xz, .zip), or an unreadable one.
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise DataError(f"{what} {path}: cannot be read: {reason} (a truncated or corrupt "
                        "download?)") from None
    return drop_trailing_blank_rows(frame)


def drop_trailing_blank_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Removes all-missing rows at the end (blank lines at the end of a file)."""
    if len(frame) == 0:
        return frame
    blank = frame.isna().all(axis=1).to_numpy()
    if not blank[-1]:
        return frame
    last = np.flatnonzero(~blank)
    return frame.iloc[: (last[-1] + 1) if len(last) else 0]


def require_columns(frame: pd.DataFrame, columns: Sequence[str], path: PathLike,
                    what: str = "file") -> None:
    """Raises :class:`DataError` listing the columns found when one of ``columns`` is absent."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} {path}: no column {', '.join(repr(c) for c in missing)}; "
                        f"columns found: {describe_columns(frame.columns)}")


def int_column(frame: pd.DataFrame, column: str, path: PathLike, header_lines: Optional[int],
               label: Optional[str] = None) -> np.ndarray:
    """Column ``column`` as int64; raises naming the line of the first non-integer entry.

    Data row ``k`` is file line ``k + 1 + header_lines``; ``header_lines=None`` (a binary
    format) names the row instead.
    """
    series = frame[column]
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(np.int64)
    numbers = pd.to_numeric(series, errors="coerce")
    values = numbers.to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(values) | (values != np.floor(values))
    if bad.any():
        _raise_bad(series, int(np.flatnonzero(bad)[0]), path, header_lines, label or column,
                   "an integer")
    return values.astype(np.int64)


def float_column(frame: pd.DataFrame, column: str, path: PathLike, header_lines: Optional[int],
                 label: Optional[str] = None) -> np.ndarray:
    """Column ``column`` as float64; raises naming the line of the first non-number."""
    series = frame[column]
    if pd.api.types.is_float_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype):
        values = series.to_numpy(np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(series, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        _raise_bad(series, int(np.flatnonzero(bad)[0]), path, header_lines, label or column,
                   "a number")
    return values


def _raise_bad(series: pd.Series, position: int, path: PathLike, header_lines: Optional[int],
               label: str, expected: str):
    value = series.iloc[position]
    if header_lines is None:  # not a text file (Parquet): name the row
        where = f"{path}, row {position + 1}: "
        raise DataError(where + (f"missing {label}" if pd.isna(value) else
                                 f"{label} {str(value)[:40]!r} is not {expected}"))
    lineno = position + 1 + header_lines
    if pd.isna(value):
        raise line_error(path, lineno, f"missing {label} (blank or short line)")
    raise line_error(path, lineno, f"{label} {str(value)[:40]!r} is not {expected}")
