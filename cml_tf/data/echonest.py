"""Echo Nest Taste Profile (Million Song Dataset challenge): how often a user played a song.

File (in one folder, e.g. ``$CML_TF_DATA/echonest/``): ``train_triplets.txt``, one
``user<TAB>song<TAB>play count`` per line, no header (48M lines, 3 GB for the full subset).

Preprocessing (paper, section 4.1: "for EchoNest data, we include the songs a user listened to
for at least 5 times as positive feedback. We do not use item features"): a (user, song) pair
with play count ``>= min_play_count`` (5) is a positive; other rows are dropped. The paper states
no user filter, so by default every user with a positive is kept (``min_user_positives`` keeps
only users with MORE than that many positives). Songs nobody played often enough are dropped.
The matrix is binary; no item features.

Ids: the file's user and song ids, in order of first appearance. The file is streamed in blocks
(pyarrow's multithreaded CSV reader: the full 48M lines in well under a minute) and filtered per
block, so memory holds only the positives. When that fast reader rejects the file (a blank line
in the middle, a short line, a non-integer count, bad UTF-8) or pyarrow is missing, the file is
read again in chunks of ``chunk_rows`` lines with pandas' C parser, which names the offending
line in the :class:`DataError`.

There is no reliable public download address for this data set any more: put the file in the
folder yourself.
"""

import logging
import pathlib
from typing import Optional, Tuple

import numpy as np
import pandas as pd

from cml_tf.data import _pandas_io
from cml_tf.data._tables import build_binary, build_binary_from_codes
from cml_tf.data.errors import DataError
from cml_tf.data.interactions import Interactions
from cml_tf.data.lines import PathLike, require_folder

log = logging.getLogger(__name__)

NAME = "echonest"
FILES = ("train_triplets.txt",)
HINT = ("The Echo Nest Taste Profile subset has no reliable public download address any more: "
        "get train_triplets.txt (from train_triplets.zip of the Million Song Dataset's Taste "
        "Profile subset, or a mirror of it) and put it in that folder.")


def load_echonest(data_dir: PathLike, min_play_count: int = 5, min_user_positives: int = 0,
                  chunk_rows: int = 5_000_000) -> Interactions:
    """Loads the Echo Nest triplets from ``data_dir/train_triplets.txt``.

    Args:
      data_dir: folder holding ``train_triplets.txt``.
      min_play_count: a play count ``>=`` this is a positive (paper: 5).
      min_user_positives: keep users with MORE than this many positives (default 0: all users
        with at least one positive; the paper states no user filter).
      chunk_rows: lines per chunk of the exact (pandas) reader.
    """
    folder = require_folder(data_dir, FILES, NAME, HINT)
    path = _pandas_io.require_file(folder / FILES[0], "triplets file")
    kwargs = dict(name=NAME, min_user_count=min_user_positives,
                  user_filter=(f"more than {min_user_positives} positives (min_user_positives="
                               f"{min_user_positives})"))
    empty = f"{NAME}: no play count >= {min_play_count} (min_play_count) in {path}"
    fast = _read_positives_pyarrow(path, min_play_count)
    if fast is not None:
        rows, user_ids, cols, song_ids = fast
        if len(rows) == 0:
            raise DataError(empty)
        return build_binary_from_codes(rows, user_ids, cols, song_ids, **kwargs)
    users, songs = _read_positives_pandas(path, min_play_count, chunk_rows)
    return build_binary(users, songs, sort_ids=False, empty_message=empty, **kwargs)


def _read_positives_pyarrow(path: pathlib.Path, min_play_count: int) -> Optional[Tuple]:
    """``(user_codes, user_ids, song_codes, song_ids)`` of the positives, or None to fall back."""
    try:
        import pyarrow as pa  # pylint: disable=import-outside-toplevel
        import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
        from pyarrow import csv  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        reader = csv.open_csv(
            path,
            read_options=csv.ReadOptions(column_names=["user", "song", "count"],
                                         block_size=64 << 20),
            parse_options=csv.ParseOptions(delimiter="\t", ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(
                column_types={"user": pa.string(), "song": pa.string(), "count": pa.int64()},
                strings_can_be_null=False))
        batches = []
        for batch in reader:
            if (batch.column("count").null_count
                    or pc.any(pc.equal(batch.column("user"), "")).as_py()
                    or pc.any(pc.equal(batch.column("song"), "")).as_py()):
                # A blank line or an empty field: let the exact reader judge and name the line.
                raise pa.ArrowInvalid("empty field")
            batches.append(batch.filter(pc.greater_equal(batch.column("count"), min_play_count)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as error:
        log.info("%s: fast reader stopped (%s); reading again to locate the problem", path,
                 str(error).splitlines()[0][:200])
        return None
    table = pa.Table.from_batches(batches, schema=reader.schema)
    users = table.column("user").combine_chunks().dictionary_encode()
    songs = table.column("song").combine_chunks().dictionary_encode()
    return (users.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            users.dictionary.to_numpy(zero_copy_only=False),
            songs.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            songs.dictionary.to_numpy(zero_copy_only=False))


def _read_positives_pandas(path: pathlib.Path, min_play_count: int, chunk_rows: int):
    """Raw user and song ids of the positives; DataError naming the line of any bad input."""
    users, songs = [], []
    n_rows = 0
    try:
        reader = pd.read_csv(path, sep="\t", header=None, names=["user", "song", "count"],
                             dtype={"user": str, "song": str}, encoding="utf-8-sig",
                             skip_blank_lines=False, keep_default_na=False, na_values=[""],
                             chunksize=chunk_rows, engine="c")
        pending_blank = None  # line of a blank line seen so far, an error if data follows
        for chunk in reader:
            blank = chunk.isna().all(axis=1).to_numpy()
            filled = np.flatnonzero(~blank)
            if len(filled) and pending_blank is not None:
                raise DataError(f"{path}, line {pending_blank}: blank line")
            if not len(filled):
                pending_blank = pending_blank or n_rows + 1
                n_rows += len(chunk)
                continue
            inner = np.flatnonzero(blank[:filled[-1]])
            if len(inner):
                raise DataError(f"{path}, line {n_rows + inner[0] + 1}: blank line")
            if filled[-1] + 1 < len(chunk):
                pending_blank = n_rows + filled[-1] + 2
            data = chunk.iloc[:filled[-1] + 1]
            # Line numbers: data row k is file line n_rows + k + 1 (no header).
            counts = _pandas_io.int_column(data, "count", path, n_rows, "play count")
            for column in ("user", "song"):
                missing = np.flatnonzero(data[column].isna().to_numpy())
                if len(missing):
                    raise DataError(f"{path}, line {n_rows + missing[0] + 1}: missing {column} "
                                    "(blank or short line)")
            positive = counts >= min_play_count
            users.append(data["user"][positive])
            songs.append(data["song"][positive])
            n_rows += len(chunk)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise DataError(f"triplets file {path}: cannot be parsed: {message}") from None
    if not users:
        raise DataError(f"triplets file {path} has no rows")
    return pd.concat(users, ignore_index=True), pd.concat(songs, ignore_index=True)
