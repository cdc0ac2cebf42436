"""cml_tf.tune on tiny synthetic data: it finds a planted good region, prunes, never reads the
test set while searching, writes what a person looks at, and its best_config.py trains with
cml_tf.main. (Resuming after a kill: test_tune_resume.py; errors and spaces:
test_tune_space.py.)"""

import json
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
import tensorflow as tf
from optuna.trial import TrialState

from cml_tf import train
from cml_tf.config import get_config
from cml_tf.tune import tune
from run_helpers import write_own_split

REPO = pathlib.Path(__file__).resolve().parents[1]
TRIALS = 7
# The planted region: at these sizes a learning rate below about 0.01 learns next to nothing in
# three epochs (validation recall@50 0.17-0.18, popularity's level), one above 0.03 reaches
# 0.29-0.45. The config starts in the bad region, so trial 0 (the config's values) is bad.
BAD_LEARNING_RATE = 2e-4


def write_split(folder: pathlib.Path) -> dict:
    """The tuner's data: 300 planted users and items, as the user's own CSV split."""
    return write_own_split(folder, n_users=300, n_items=300, n_clusters=6, mean_per_user=12)


def study_config(paths: dict, trials: int = TRIALS):
    config = get_config()
    config.data.train_path = str(paths["train"])
    config.data.valid_path = str(paths["valid"])
    config.data.test_path = str(paths["test"])
    config.model.dim = 16
    config.train.update(epochs=3, batch_size=512, eval_every=1, verbose=0, jit_sampling=False,
                        learning_rate=BAD_LEARNING_RATE)
    config.viz.enabled = False
    # At this size the most popular items reach validation recall@50 0.41 and the best trial
    # about that: the final model is exported whatever it learned (issue 15.8c's check).
    config.export.update(index="brute_force", recall_target=0.0, report_users=50,
                         report_queries=5, tune_users=50, allow_untrained=True)
    config.tune.update(trials=trials, budget_minutes=30.0, pruner_startup_trials=2,
                       sampler_startup_trials=4)
    config.tune.space.cml = {"model": {"margin": "uniform 0.1 2.0"},
                             "train": {"learning_rate": "log 1e-4 0.5"}}
    return config


class HiddenTestFile:
    """The trainer the tuner calls, wrapped: while the search runs, the test file is moved
    away (so nothing can read it) and every Python open() of its path is recorded (an audit
    hook: the tests run as root, so a chmod would not stop a read); the final run gets it
    back."""

    def __init__(self, test_file: pathlib.Path):
        self.test_file = test_file
        self.hidden = test_file.with_name("hidden-" + test_file.name)
        self.opened_during_search, self.searching, self.calls = [], False, []
        sys.addaudithook(self._audit)

    def _audit(self, event, args):
        if self.searching and event == "open" and args and isinstance(args[0], (str, bytes,
                                                                              os.PathLike)):
            if os.fspath(args[0]) in (str(self.test_file), os.fsencode(self.test_file)):
                self.opened_during_search.append(args[0])

    def __enter__(self):
        self.test_file.rename(self.hidden)
        self.searching = True
        return self

    def __exit__(self, *exc):
        self.searching = False
        if self.hidden.exists():
            self.hidden.rename(self.test_file)

    def trainer(self, config, workdir, skip_test=False, callbacks=()):
        self.calls.append((workdir, skip_test, config.data.test_path))
        if not skip_test:  # the final run: the test set is read here, and only here
            self.__exit__()
        return train.train_and_evaluate(config, workdir, skip_test=skip_test,
                                        callbacks=callbacks)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    paths = write_split(folder)
    config = study_config(paths)
    guard = HiddenTestFile(paths["test"])
    with guard:
        result = tune(config, str(folder / "study"), trainer=guard.trainer)
    import optuna  # pylint: disable=import-outside-toplevel
    study = optuna.load_study(study_name="cml_tf",
                              storage=f"sqlite:///{folder / 'study' / 'study.db'}")
    return {"result": result, "study": study, "guard": guard, "dir": folder / "study",
            "config": config, "paths": paths}


@pytest.mark.slow
def test_the_tuner_finds_the_planted_good_region(tuned):
    trials = tuned["study"].trials
    first = trials[0]
    assert first.params["train.learning_rate"] == pytest.approx(BAD_LEARNING_RATE)
    best = tuned["result"]["best"]
    assert best["params"]["train.learning_rate"] > 0.01
    assert best["value"] > first.value + 0.05
    bad = [t.value for t in trials if t.state == TrialState.COMPLETE
           and t.params["train.learning_rate"] < 1e-3]
    assert bad and max(bad) < best["value"] - 0.05


@pytest.mark.slow
def test_pruned_trials_stop_early(tuned):
    pruned = [t for t in tuned["study"].trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.params) for t in tuned["study"].trials]
    for trial in pruned:
        assert trial.user_attrs["epochs"] < 3
        assert max(trial.intermediate_values) == trial.user_attrs["epochs"]
        # pruned because it trailed the trials before it at the same epoch
        step = max(trial.intermediate_values)
        earlier = [t.intermediate_values[step] for t in tuned["study"].trials[:trial.number]
                   if step in t.intermediate_values]
        assert trial.intermediate_values[step] < max(earlier)
    assert len(tuned["study"].trials) == TRIALS


@pytest.mark.slow
def test_the_search_never_reads_the_test_set(tuned):
    guard = tuned["guard"]
    assert guard.opened_during_search == []
    searches = [call for call in guard.calls if call[1]]
    assert len(searches) == TRIALS and all(test_path == "" for _, _, test_path in searches)
    finals = [call for call in guard.calls if not call[1]]
    assert [pathlib.Path(w).name for w, _, _ in finals] == ["final"]
    final = json.loads((tuned["dir"] / "final" / "metrics.json").read_text())
    assert set(final) >= {"valid", "test", "train_seconds", "epochs"}
    # The final run is the best trial's config again: the same validation figure.
    assert final["valid"]["recall@50"] == pytest.approx(tuned["result"]["best"]["value"],
                                                        abs=0.01)
    for metrics in tuned["dir"].glob("trials/*/metrics.json"):
        assert "valid" in json.loads(metrics.read_text())
        assert "test" not in json.loads(metrics.read_text())


@pytest.mark.slow
def test_what_a_person_sees(tuned):
    folder, study = tuned["dir"], tuned["study"]
    table = pd.read_csv(folder / "trials.csv")
    assert list(table["number"]) == list(range(TRIALS))
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert {"objective", "seconds", "epochs", "model.margin", "train.learning_rate",
            "valid_recall@50"} <= set(table.columns)
    complete = table[table["state"] == "COMPLETE"]
    assert (complete["objective"] == complete["valid_recall@50"]).all()

    best = json.loads((folder / "best_config.json").read_text())
    assert best["trial"] == tuned["result"]["best"]["trial"]
    assert best["value"] == max(t.value for t in study.trials if t.state == TrialState.COMPLETE)
    assert best["config"]["train"]["learning_rate"] == best["params"]["train.learning_rate"]
    assert "train.learning_rate" in best["changed"]

    assert (folder / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = sorted((folder / "final" / "saved_model").iterdir())
    assert [p.name for p in saved] == ["1"] and (saved[0] / "saved_model.pb").exists()
    for part in ("checkpoints", "tensorboard", "config.json"):
        assert (folder / "final" / part).exists()

    # TensorBoard's HParams dashboard: the experiment and one session per trial.
    plugins = []
    for events in [*folder.glob("hparams/events*"),
                   *folder.glob("trials/*/tensorboard/events*")]:
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            plugins += [v.metadata.plugin_data.plugin_name for v in event.summary.value]
    assert plugins.count("hparams") >= 1 + TRIALS  # the experiment, a session per trial


@pytest.mark.slow
def test_best_config_py_trains_with_cml_tf_main(tuned, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cml_tf.main", f"--config={tuned['dir'] / 'best_config.py'}",
         f"--workdir={tmp_path / 'again'}", "--config.export.enabled=False",
         "--config.export.scann.num_leaves=10"],  # a placeholder stays overridable
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["valid"]["recall@50"] == pytest.approx(tuned["result"]["best"]["value"],
                                                          abs=0.01)
    assert "test" in metrics
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    final = json.loads((tuned["dir"] / "final" / "config.json").read_text())
    config["export"]["enabled"], config["export"]["scann"]["num_leaves"] = True, None
    assert config == final
