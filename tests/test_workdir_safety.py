"""Nothing a user made is deleted; a finished run survives a failed --overwrite; a failed start
does not block the corrected rerun (issue 15.1, 15.2)."""

import shutil

import pytest

from cml_tf import train
from cml_tf.data.errors import DataError

from run_helpers import InterruptAt, run_killed, tiny_config


def listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("with_config", [False, True])
def test_overwrite_never_deletes_a_folder_that_is_not_one_of_our_runs(with_config, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "important.txt").write_text("years of work")
    if with_config:  # looks like a run, but holds a file no run writes
        (folder / "config.json").write_text("{}")
    with pytest.raises(train.WorkdirError, match=r"important\.txt.*not deleting it"):
        train.train_and_evaluate(tiny_config(), str(folder), overwrite=True)
    assert (folder / "important.txt").read_text() == "years of work"
    assert listing(folder) == ["config.json", "important.txt"][not with_config:]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run: (workdir, its files, its metrics.json text)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train.train_and_evaluate(tiny_config(epochs=1), str(workdir))
    return workdir, listing(workdir), (workdir / "metrics.json").read_text()


def assert_intact(finished):
    workdir, files, metrics = finished
    assert listing(workdir) == files
    assert (workdir / "metrics.json").read_text() == metrics
    assert not (workdir.parent / f".{workdir.name}.replaced").exists()


@pytest.mark.slow
def test_overwrite_with_a_bad_config_or_missing_data_keeps_the_finished_run(finished, tmp_path):
    bad_model = tiny_config()
    bad_model.model.dim = 0
    with pytest.raises(ValueError, match="dim must be > 0"):
        train.train_and_evaluate(bad_model, str(finished[0]), overwrite=True)
    assert_intact(finished)
    missing = tiny_config()
    missing.data.train_path = str(tmp_path / "absent.csv")
    with pytest.raises((DataError, OSError), match="absent.csv"):
        train.train_and_evaluate(missing, str(finished[0]), overwrite=True)
    assert_intact(finished)


@pytest.mark.slow
def test_the_replaced_run_comes_back_when_its_replacement_fails_before_a_checkpoint(finished):
    diverging = tiny_config(learning_rate=3e38)  # NaN in the first epoch
    with pytest.raises(train.TrainingDiverged):
        train.train_and_evaluate(diverging, str(finished[0]), overwrite=True)
    assert_intact(finished)


@pytest.mark.slow
def test_a_replacement_killed_before_its_first_checkpoint_gives_the_old_run_back(finished,
                                                                                tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished[0], workdir)
    replacement = "tiny_config(epochs=2)"
    run_killed(workdir, "begin", 1, replacement, overwrite=True)  # before its first checkpoint
    assert (tmp_path / ".run.replaced" / "metrics.json").exists()  # kept aside meanwhile
    with pytest.raises(train.WorkdirError, match="finished run"):  # the next run finds it back
        train.train_and_evaluate(tiny_config(epochs=2), str(workdir))
    assert_intact((workdir, finished[1], finished[2]))
    # A replacement that wrote its first checkpoint replaces the old run for good.
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(tiny_config(epochs=2), str(workdir), overwrite=True,
                                 callbacks=[InterruptAt(2)])
    assert not (tmp_path / ".run.replaced").exists()
    metrics = train.train_and_evaluate(tiny_config(epochs=2), str(workdir))  # resumes it
    assert metrics["epochs"] == 2 and len(metrics["epoch_seconds"]) == 1



@pytest.mark.slow
def test_a_run_that_failed_to_start_does_not_block_the_corrected_rerun(tmp_path):
    workdir = tmp_path / "run"
    missing = tiny_config()
    missing.data.train_path = str(tmp_path / "absent.csv")
    with pytest.raises((DataError, OSError)):
        train.train_and_evaluate(missing, str(workdir))
    assert not workdir.exists()  # nothing is written before the config and data are valid
    with pytest.raises(train.TrainingDiverged):  # fails in its first epoch: no checkpoint
        train.train_and_evaluate(tiny_config(epochs=1, learning_rate=3e38), str(workdir))
    metrics = train.train_and_evaluate(tiny_config(epochs=1), str(workdir))  # another config
    assert metrics["epochs"] == 1
    assert [row["epoch"] for row in metrics["validation_history"]] == [1]
