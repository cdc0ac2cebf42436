"""An export killed with SIGKILL leaves nothing that lasts, and a rerun of a training whose
export was already published does not publish it twice (issue 15.4). For the second, a Ctrl-C
right after the rename leaves what a kill there leaves (the version published, no
metrics.json: nothing runs after the rename but the writing of metrics.json), so it runs in
this process."""

import json
import os

import pytest

from cml_tf import export, train
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic
from cml_tf.models import CML

from run_helpers import exporting_config, run_python

KILLED_OVERWRITE = """
import os, signal, sys
import cml_tf
from cml_tf import export
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic
from cml_tf.models import CML

split = split_per_user(make_synthetic(n_users=100, n_items=60, n_clusters=3,
                                      with_features=False), seed=0)
model = CML.from_interactions(split.train, dim=8)
options = dict(index="brute_force", k=10, recall_target=None, report_users=20,
               report_queries=2, warmup=False)
export.export_model(model, split, sys.argv[1], **options)
rename = os.rename
def rename_then_die(source, target):  # the second rename of an overwrite: tmp -> version
    if os.path.basename(str(source)).startswith(".tmp-"):
        os.kill(os.getpid(), signal.SIGKILL)
    rename(source, target)
os.rename = rename_then_die
export.export_model(model, split, sys.argv[1], version=1, overwrite=True, **options)
"""


@pytest.mark.slow
def test_the_next_export_cleans_up_after_a_killed_one_and_only_after_it(tmp_path):
    base = tmp_path / "exports"
    done = run_python(KILLED_OVERWRITE.replace("sys.argv[1]", repr(str(base))))
    assert done.returncode == -9, done.stderr[-3000:]
    # Killed between moving version 1 aside and moving its replacement in.
    assert not (base / "1").exists()
    (old,) = base.glob(".old-1-*")
    (orphan,) = base.glob(".tmp-1-*")
    assert (orphan / "saved_model.pb").exists()
    live = base / f".tmp-2-{export._HOST}-{os.getpid()}-abcdef12"  # a live process's
    other_host = base / f".tmp-2-00000000-{orphan.name.split('-')[3]}-abcdef12"
    foreign = base / ".tmp-3-a-folder-of-someone-else"
    for folder in (live, other_host, foreign):
        folder.mkdir()
    report = json.loads((old / "assets.extra" / "index_report.json").read_text())

    split = split_per_user(make_synthetic(n_users=100, n_items=60, n_clusters=3,
                                          with_features=False), seed=0)
    result = export.export_model(CML.from_interactions(split.train, dim=8), split, base,
                                 index="brute_force", k=10, recall_target=None,
                                 report_users=20, report_queries=2, warmup=False)
    assert result["version"] == 2  # version 1 is back from .old-1-*
    assert json.loads((base / "1" / "assets.extra" / "index_report.json").read_text()) == report
    assert sorted(p.name for p in base.iterdir()) == sorted(
        ["1", "2", live.name, other_host.name, foreign.name])


def one_epoch_exported():
    config = exporting_config(epochs=1)
    config.export.allow_untrained = True  # one epoch on this small data is below popularity
    return config


@pytest.mark.slow
def test_a_rerun_after_an_interruption_that_followed_the_export_reuses_it(tmp_path,
                                                                         monkeypatch):
    move = export._move_into_place

    def move_then_stop(*args):
        move(*args)
        raise KeyboardInterrupt  # published, metrics.json not yet written

    monkeypatch.setattr(export, "_move_into_place", move_then_stop)
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(one_epoch_exported(), str(workdir))
    monkeypatch.undo()
    assert (workdir / "saved_model" / "1").is_dir() and not (workdir / "metrics.json").exists()
    metrics = train.train_and_evaluate(one_epoch_exported(), str(workdir))
    assert metrics["export"]["version"] == 1 and metrics["export"]["reused"] is True
    assert sorted(p.name for p in (workdir / "saved_model").iterdir()) == ["1"]
    # It learned nothing (below popularity), and it was exported because the config asks.
    assert metrics["learned_nothing"] is True
