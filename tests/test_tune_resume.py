"""A study killed with SIGKILL in the middle of a trial continues when the same config runs
again: finished trials are kept, the interrupted one is marked failed and runs again, the trial
count grows and the best is kept; the finished study's command is then a no-op and another
config in the same workdir is refused."""

import importlib.util
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from cml_tf import train
from cml_tf.tune import tune
from cml_tf.tuning.report import config_source
from test_tune import REPO, study_config, write_split

TRIALS = 3


def load_config_file(path):
    spec = importlib.util.spec_from_file_location("tune_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def finished(trials):
    return {t.number: (t.state, t.value, t.params) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}


@pytest.mark.slow
def test_a_killed_study_resumes_with_the_same_command(tmp_path):
    config = study_config(write_split(tmp_path), trials=TRIALS)
    config.export.enabled = False
    # Trials of a few seconds: at 3 epochs one can end between two polls of the storage, and
    # the study could finish before the test sees a trial running after a finished one.
    config.train.epochs = 10
    config_file = tmp_path / "tune_config.py"
    config_file.write_text(config_source(config, "the resume test's config"))
    workdir = tmp_path / "study"
    command = [sys.executable, "-m", "cml_tf.tune", f"--config={config_file}",
               f"--workdir={workdir}"]
    storage = f"sqlite:///{workdir / 'study.db'}"

    log = tmp_path / "tune.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    killed_trial, before = None, {}
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            # Opening the storage while the tuner creates its tables would race with it: the
            # tuner writes hparams/ once its study exists.
            if not (workdir / "hparams").exists():
                continue
            trials = optuna.load_study(study_name="cml_tf", storage=storage).trials
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if finished(trials) and running:
                time.sleep(0.3)  # into the trial's training; kill if it still runs
                trials = optuna.load_study(study_name="cml_tf", storage=storage).trials
                if trials[running[0]].state == TrialState.RUNNING:
                    process.send_signal(signal.SIGKILL)
                    killed_trial = running[0]
                    break
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert killed_trial is not None, log.read_text()[-3000:]
    study = optuna.load_study(study_name="cml_tf", storage=storage)
    before = finished(study.trials)
    assert study.trials[killed_trial].state == TrialState.RUNNING  # what a kill leaves

    # The same config again (here in this process: the CLI path is the same tune()).
    resumed = tune(load_config_file(config_file), str(workdir))
    study = optuna.load_study(study_name="cml_tf", storage=storage)
    after = finished(study.trials)
    assert len(after) == TRIALS > len(before)
    assert {n: after[n] for n in before} == before  # kept, not re-run
    killed = study.trials[killed_trial]
    assert killed.state == TrialState.FAIL and killed.user_attrs["interrupted"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == killed_trial]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    best_before = max((v for s, v, _ in before.values() if s == TrialState.COMPLETE),
                      default=-1)
    assert study.best_value >= best_before
    assert (workdir / "final" / "metrics.json").exists()

    assert resumed["best"]["value"] == study.best_value

    # The finished study: the same call trains nothing more; another config is refused.
    again = tune(load_config_file(config_file), str(workdir))
    assert again["best"] == resumed["best"] and again["final"] == resumed["final"]
    assert len(optuna.load_study(study_name="cml_tf", storage=storage).trials) == len(
        study.trials)
    other = load_config_file(config_file)
    other.model.dim = 8
    with pytest.raises(train.WorkdirError, match="different config"):
        tune(other, str(workdir))
