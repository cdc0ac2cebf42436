"""The workdir of a training run: when it may be used, resumed or replaced, and how a replaced
run is kept until its replacement has safely started.

A folder is "one of our runs" when it holds ``config.json`` and nothing but what a run writes
(:data:`RUN_ENTRIES`). Nothing else is ever deleted: a folder with anything foreign in it is
refused, naming what it holds.

``--overwrite`` moves the old run aside, to the hidden sibling ``.<name>.replaced``, and deletes
it only once the new run has written its first checkpoint (:meth:`Workdir.started`); if the new
run fails before that, the old run is moved back (:meth:`Workdir.failed`). A process killed in
between leaves the sibling behind, and the next run in that workdir finishes the job: it
deletes the old run if the new one had a checkpoint, and else moves the old run back.
"""

import os
import pathlib
import shutil

from absl import logging

# What a run writes into its workdir (other modules that add an entry add it here).
RUN_ENTRIES = frozenset({"config.json", "metrics.json", "checkpoints", "tensorboard",
                         "saved_model", "item_map.png", "training_curves.png"})


class Layout:
    """What a kind of workdir holds: ``ours(name)`` says whether a top-level entry is written by
    it, ``progress(path)`` whether it holds work worth keeping (a run without it failed before
    its first checkpoint and is started afresh). The default is a training run's."""

    def __init__(self, ours=RUN_ENTRIES.__contains__, progress=None):
        self.ours = ours
        self.progress = progress or (lambda path: not _never_started(path))


RUN = Layout()


class WorkdirError(RuntimeError):
    """The workdir holds another run, a finished run, or files that are not a run of ours."""


def _listing(names, limit: int = 5) -> str:
    names = sorted(names)
    more = f", and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _foreign(path: pathlib.Path, layout: Layout) -> list:
    """Entries of ``path`` that no run of ours writes (named with a / for folders)."""
    return [p.name + ("/" if p.is_dir() else "") for p in path.iterdir()
            if not layout.ours(p.name) and not p.name.endswith(".tmp")]


def _has_checkpoint(path: pathlib.Path) -> bool:
    return any((path / "checkpoints").glob("ckpt-*.index"))


def _never_started(path: pathlib.Path) -> bool:
    """Ours, but without a checkpoint, metrics or an export: a run that failed before its first
    checkpoint (while loading, building or in its first epoch)."""
    return not (_has_checkpoint(path) or (path / "metrics.json").exists()
                or (path / "saved_model").exists())


def _clear_run(path: pathlib.Path, layout: Layout):
    """Deletes what a run of ours wrote into ``path`` (only what ``layout`` calls ours)."""
    for entry in path.iterdir():
        if layout.ours(entry.name) or entry.name.endswith(".tmp"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _check_ours(path: pathlib.Path, action: str, layout: Layout):
    if not (path / "config.json").exists():
        everything = _listing(entry.name for entry in path.iterdir())
        raise WorkdirError(f"{path} is not empty and holds no run of ours ({everything}); "
                           f"{action}choose an empty or new --workdir")
    foreign = _foreign(path, layout)
    if foreign:
        raise WorkdirError(f"{path} holds files that no run of ours writes "
                           f"({_listing(foreign)}); {action}move them away or choose another "
                           "--workdir")


class Workdir:
    """A prepared workdir (:func:`prepare`): ``path``, and the replaced run kept aside."""

    def __init__(self, path: pathlib.Path, aside: pathlib.Path = None, layout: Layout = RUN):
        self.path, self.aside, self.layout = path, aside, layout

    def started(self):
        """The new run has written its first checkpoint: the replaced run goes."""
        if self.aside is not None:
            shutil.rmtree(self.aside)
            logging.info("deleted the replaced run (%s)", self.aside)
            self.aside = None

    def failed(self):
        """The new run failed: before its first checkpoint the replaced run comes back; after
        it, the new run's work is kept and the replaced run goes."""
        if self.aside is not None and self.layout.progress(self.path):
            self.started()
        elif self.aside is not None:
            _put_back(self.path, self.aside, self.layout)
            self.aside = None


def aside_path(path: pathlib.Path) -> pathlib.Path:
    return path.with_name(f".{path.name}.replaced")


def _put_back(path: pathlib.Path, aside: pathlib.Path, layout: Layout):
    if path.exists():
        _check_ours(path, "", layout)
        _clear_run(path, layout)
        path.rmdir()
    os.rename(aside, path)
    logging.warning("the run replacing %s stopped before its first checkpoint: the run it "
                    "replaced is back", path)


def _finish_interrupted_replacement(path: pathlib.Path, layout: Layout):
    aside = aside_path(path)
    if not aside.exists():
        return
    _check_ours(aside, "not touching it: ", layout)
    if path.exists() and (path / "config.json").exists() and layout.progress(path):
        shutil.rmtree(aside)  # the replacement had started: the user asked to replace this
        logging.info("deleted %s, the run that %s replaced", aside, path)
    else:
        _put_back(path, aside, layout)


def prepare(workdir, config_json: str, overwrite: bool = False, layout: Layout = RUN) -> Workdir:
    """Creates ``workdir`` or checks that it may be used, and writes ``config.json``.

    An empty or new folder is used; a run of ours that never started (no checkpoint) is
    cleared and started afresh, whatever its config; an unfinished run with the same config is
    resumed. Refused unless ``overwrite``: a finished run (``metrics.json``), an unfinished run
    with another config. Refused always: a folder holding anything that is not ours.
    """
    path = pathlib.Path(workdir)
    _finish_interrupted_replacement(path, layout)
    aside = None
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"{path} is a file, not a folder; choose another --workdir")
    if path.exists() and any(path.iterdir()):
        _check_ours(path, "not deleting it: " if overwrite else "", layout)
        same_config = (path / "config.json").read_text() == config_json
        if not layout.progress(path):
            _clear_run(path, layout)
        elif overwrite:
            aside = aside_path(path)
            os.rename(path, aside)
            logging.info("moved the run in %s aside to %s until this run has its first "
                         "checkpoint", path, aside)
        elif (path / "metrics.json").exists():
            raise WorkdirError(f"{path} already holds a finished run (metrics.json); pass "
                               "--overwrite to replace it or choose another --workdir")
        elif not same_config:
            raise WorkdirError(f"{path} holds an unfinished run with a different config; "
                               "pass --overwrite to replace it or choose another --workdir")
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config_json)
    return Workdir(path, aside, layout)
