"""One session of a study: Optuna's ``study.optimize`` within what is left of the budget and of
``tune.trials``, with a line, ``trials.csv`` and an HParams session written after every trial."""

import logging as std_logging
import time

import optuna
import tensorflow as tf
from absl import logging
from optuna.trial import TrialState

from cml_tf.train import TrainingDiverged
from cml_tf.tuning import report
from cml_tf.tuning import study as studies
from cml_tf.tuning.trial import TrialConfigError, TrialTimeout, objective

CONSECUTIVE_FAILURES = 3  # the session stops after this many failed trials in a row
# A trial's failure that ends only that trial (the study goes on); anything else (a DataError,
# a workdir problem) ends the study.
TRIAL_ERRORS = (TrainingDiverged, TrialTimeout, TrialConfigError,
                tf.errors.ResourceExhaustedError)


class SkipRetracingNotes(std_logging.Filter):
    """Every trial builds a new model and so traces a new train function; TensorFlow's warning
    about repeated tracing says nothing about a study. ``with SkipRetracingNotes():``."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()

    def __enter__(self):
        std_logging.getLogger("tensorflow").addFilter(self)
        return self

    def __exit__(self, *exc):
        std_logging.getLogger("tensorflow").removeFilter(self)


def search(study, config, params, workdir, trainer, budget) -> list:
    """Runs trials until the budget or ``tune.trials`` is spent (or CONSECUTIVE_FAILURES trials
    fail in a row); returns the error messages of this session's failed trials, in order."""
    failures = []

    def after_trial(study, trial):
        budget.record()
        logging.info("%s", report.trial_line(trial, config, study))
        report.write_trials_csv(study, workdir / "trials.csv")
        report.write_hparams_session(workdir, trial)
        failed = trial.state == TrialState.FAIL
        failures.append(trial.user_attrs.get("error", "interrupted") if failed else None)
        recent = failures[-CONSECUTIVE_FAILURES:]
        if len(recent) == CONSECUTIVE_FAILURES and all(recent):
            logging.warning("%d trials in a row failed; stopping the study (the last: %s)",
                            len(recent), recent[-1])
            study.stop()

    def deadline_of(trial):
        limit = config.tune.trial_minutes * 60 or float("inf")
        if time.monotonic() + limit < budget.deadline():
            return time.monotonic() + limit, "time limit (tune.trial_minutes)"
        return budget.deadline(), "end of the budget"

    wanted = config.tune.trials
    if budget.remaining() <= 0 or (wanted and len(studies.finished(study)) >= wanted):
        return failures
    callbacks = [after_trial]
    if wanted:
        callbacks.append(optuna.study.MaxTrialsCallback(
            wanted, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    study.optimize(objective(config, params, workdir, trainer, deadline_of),
                   timeout=budget.remaining(), callbacks=callbacks, catch=TRIAL_ERRORS)
    return [f for f in failures if f]
