"""One trial of a study: the trial's config, the Keras callback that feeds Optuna's pruner and
enforces the time limits, and the objective (``train_and_evaluate`` on validation only)."""

import copy
import logging as std_logging
import pathlib
import shutil
import time

import optuna
import tensorflow as tf

from cml_tf.data.errors import DataError
from cml_tf.main import one_line
from cml_tf.tuning import space


class TrialTimeout(RuntimeError):
    """A trial reached its time limit before its first validation pass (it has no value)."""


class TrialConfigError(RuntimeError):
    """The trial's values do not make a valid config (e.g. VBPR's feature_dim >= dim): that
    trial fails, the study goes on. (A DataError is not one: it ends the study.)"""


def trial_config(base, values):
    """The config a trial trains: ``base`` with the drawn ``values``, validation only (no test
    file named, so none is opened), no export, no pictures, no progress bar, and early
    stopping on the tuned metric."""
    config = copy.deepcopy(base)
    for path, value in values.items():
        space.assign(config, path, value)
    config.train.monitor = base.tune.metric
    config.train.verbose = 0
    config.data.test_path = ""
    config.export.enabled = False
    if "viz" in config:
        config.viz.enabled = False
    return config


def final_config(base, values):
    """The config of the final run: ``base`` with the best trial's values, early stopping on
    the tuned metric; everything else (test set, export, pictures) as ``base`` has it."""
    config = copy.deepcopy(base)
    for path, value in values.items():
        space.assign(config, path, value)
    config.train.monitor = base.tune.metric
    return config


class TrialCallback(tf.keras.callbacks.Callback):
    """Reports the validation metric of every evaluation to the Optuna trial (step = epoch),
    prunes when Optuna's pruner says so, and stops training at ``deadline`` (time.monotonic()):
    with the best weights so far when the trial has been evaluated, else by raising
    :class:`TrialTimeout`. Runs after train_and_evaluate's validation callback, whose value it
    reads from ``logs[key]``."""

    def __init__(self, trial, key: str, deadline: float, reason: str = "time limit"):
        super().__init__()
        self.trial, self.key, self.deadline, self.reason = trial, key, deadline, reason
        self.evaluations, self.epoch, self.stopped = 0, 0, None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch + 1
        value = (logs or {}).get(self.key)
        if value is not None:
            self.evaluations += 1
            self.trial.report(float(value), step=self.epoch)
            if self.trial.should_prune():
                self.trial.set_user_attr("epochs", self.epoch)
                raise optuna.TrialPruned(f"pruned at epoch {self.epoch} ({self.key} "
                                         f"{value:.4f})")
        self._check_time()

    def on_train_batch_end(self, batch, logs=None):
        self._check_time()

    def _check_time(self):
        if self.stopped or time.monotonic() < self.deadline:
            return
        if not self.evaluations:
            self.trial.set_user_attr("epochs", self.epoch)
            raise TrialTimeout(f"the {self.reason} ended the trial before its first validation "
                               f"pass (after {self.epoch} epochs); allow more time or lower "
                               "train.eval_every")
        self.stopped = self.reason
        self.model.stop_training = True


class QuietTraining(std_logging.Filter):
    """Drops the INFO lines of training (validation passes, early stopping) while a trial
    runs, so that a study logs one line per trial; warnings pass."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING


def objective(base, params, workdir, trainer, deadline_of):
    """The Optuna objective: a trial's validation metric.

    ``trainer(config, workdir, skip_test=True, callbacks=[...])`` trains one config
    (``cml_tf.train.train_and_evaluate``); ``deadline_of(trial)`` is the time.monotonic() at
    which the trial must stop and why (the per-trial limit or the end of the budget).
    """
    metric = base.tune.metric

    def run(trial):
        values = space.suggest(trial, params, base)
        trial_dir = pathlib.Path(workdir) / "trials" / str(trial.number)
        deadline, reason = deadline_of(trial)
        callback = TrialCallback(trial, f"val_{metric}", deadline, reason)
        quiet = None if base.tune.log_trials else QuietTraining()
        absl_logger = std_logging.getLogger("absl")
        if quiet:
            absl_logger.addFilter(quiet)
        try:
            metrics = trainer(trial_config(base, values), str(trial_dir), skip_test=True,
                              callbacks=[callback])
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # retried when the study resumes
            raise
        except optuna.TrialPruned:
            raise
        except Exception as error:  # recorded for the log line, trials.csv; Optuna re-raises
            trial.set_user_attr("error", one_line(error))
            if isinstance(error, ValueError) and not isinstance(error, DataError):
                raise TrialConfigError(one_line(error)) from error
            raise
        finally:
            if quiet:
                absl_logger.removeFilter(quiet)
            if not base.tune.keep_trial_checkpoints:
                shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
            tf.keras.backend.clear_session()
        trial.set_user_attr("epochs", metrics["epochs"])
        if metrics.get("best_epoch") is not None:
            trial.set_user_attr("best_epoch", metrics["best_epoch"])
        if callback.stopped:
            trial.set_user_attr("stopped", callback.stopped)
        for name, value in metrics["valid"].items():
            if "@" in name:
                trial.set_user_attr(f"valid_{name}", value)
        return metrics["valid"][metric]

    return run
