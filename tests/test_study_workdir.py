"""A tuner's workdir under cml_tf.workdir's rules (issue 15.1, 15.2 for cml_tf.tune): a study is
resumed with its files, a folder holding anything else is refused, and --overwrite keeps the
replaced study until the new one has ended a trial."""

import pytest

from cml_tf import workdir as workdir_lib
from cml_tf.tuning.study import STUDY_LAYOUT

CONFIG = '{"seed": 42}'


def a_study(path, trials_done=True):
    """The files a study with one ended trial leaves (the real ones: test_tune.py)."""
    path.mkdir()
    (path / "config.json").write_text(CONFIG)
    (path / "study.db").write_bytes(b"SQLite format 3\0")
    (path / "trials" / "0").mkdir(parents=True)
    (path / "final-1").mkdir()
    (path / ".tune.lock").write_text("")
    if trials_done:
        (path / "trials.csv").write_text("number,value\n0,0.3\n")
    return sorted(p.name for p in path.iterdir())


def prepare(path, config=CONFIG, overwrite=False):
    return workdir_lib.prepare(path, config, overwrite, layout=STUDY_LAYOUT)


def test_a_study_is_resumed_with_every_file_it_wrote(tmp_path):
    files = a_study(tmp_path / "study")
    assert prepare(tmp_path / "study").path == tmp_path / "study"
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == files


def test_a_study_folder_holding_a_foreign_file_is_refused_even_with_overwrite(tmp_path):
    a_study(tmp_path / "study")
    (tmp_path / "study" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(workdir_lib.WorkdirError, match=r"notes\.txt"):
            prepare(tmp_path / "study", overwrite=overwrite)
    assert (tmp_path / "study" / "notes.txt").read_text() == "mine"


def test_another_config_is_refused_unless_overwrite(tmp_path):
    a_study(tmp_path / "study")
    with pytest.raises(workdir_lib.WorkdirError, match="different config"):
        prepare(tmp_path / "study", config='{"seed": 1}')


def test_a_replacing_study_that_ends_no_trial_gives_the_old_one_back(tmp_path):
    files = a_study(tmp_path / "study")
    run = prepare(tmp_path / "study", config='{"seed": 1}', overwrite=True)
    (run.path / "study.db").write_bytes(b"new")  # created, but no trial ended
    run.failed()
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == files
    assert (tmp_path / "study" / "config.json").read_text() == CONFIG


def test_a_replacing_study_that_ended_a_trial_is_kept_when_it_fails_later(tmp_path):
    a_study(tmp_path / "study")
    run = prepare(tmp_path / "study", config='{"seed": 1}', overwrite=True)
    (run.path / "trials.csv").write_text("number,value\n0,0.2\n")
    run.failed()
    assert not workdir_lib.aside_path(tmp_path / "study").exists()
    assert (tmp_path / "study" / "config.json").read_text() == '{"seed": 1}'
