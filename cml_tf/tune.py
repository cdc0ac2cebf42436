"""Validation-driven tuning of a config, then one final run of the best.

    python -m cml_tf.tune --config=configs/<x>.py --workdir=DIR --budget_minutes=N \
        [--trials=M] [--config.<key>=<value> ...]

or ``cml_tf.tune.tune(config, workdir, budget_minutes=..., trials=...)``. An Optuna study (TPE
seeded from ``config.seed``, the pruner of ``config.tune.pruner`` fed with the validation metric
of every evaluation) searches ``config.tune.space[<model>]`` (cml_tf/tuning/space.py) for the
best validation ``config.tune.metric``. A trial is
``train_and_evaluate(trial_config, DIR/trials/<n>, skip_test=True)``: no test file named, no
export, no pictures; it stops at ``tune.trial_minutes`` or when the budget ends. Then the best
trial's config is trained once more, the way ``cml_tf.main`` trains, into ``DIR/final/``
(metrics.json with valid and test, checkpoints/, tensorboard/, saved_model/<version>/): the
test set is read there and only there.

``DIR`` holds:

    config.json        the study's config (a different config is refused; the budget keys
                       tune.budget_minutes / tune.trials may grow to extend the study)
    study.db           the Optuna study (SQLite): a re-run of the command continues it
    trials/<n>/        each trial's workdir (metrics.json, tensorboard/; checkpoints removed)
    trials.csv         every trial: state, validation metrics, seconds, epochs, parameters
    best_config.json   the best trial and its whole config; best_config.py the same as a
                       config file: python -m cml_tf.main --config=DIR/best_config.py
    tuning.png         validation metric by trial and Optuna's parameter importances
    hparams/           TensorBoard's HParams experiment (tensorboard --logdir DIR)
    final/             the final run

Bad input (an unknown or malformed search space, an empty range, a parameter the model does
not take, no validation set, a workdir of another study, a budget no trial fits in) ends the
command with one line and exit status 1.
"""

import copy
import json
import os
import pathlib
import sys
import tempfile

from absl import flags, logging

from cml_tf import workdir as workdir_lib
from cml_tf.main import (HELP_FLAGS, CommandLineError, help_text, one_line, parse_command_line,
                         summary, use_absl_logging)

BUDGET_KEYS = ("budget_minutes", "trials", "log_trials")  # not part of a study's identity


class TuneError(RuntimeError):
    """The study could not produce a best trial (the budget fits no trial, every trial fails)."""


def check_config(config):
    """ValueError for a config the tuner cannot search (before anything is written)."""
    if "tune" not in config:
        raise ValueError("the config has no tune section (see cml_tf/config.py: tune_config)")
    tune_config = config.tune
    metrics = {f"{m}@{k}" for k in config.eval.ks for m in ("recall", "ndcg", "precision")}
    if tune_config.metric not in metrics:
        raise ValueError(f"tune.metric {tune_config.metric!r} is not among the evaluated "
                         f"metrics ({', '.join(sorted(metrics))}; eval.ks={tuple(config.eval.ks)})")
    if not tune_config.budget_minutes > 0:
        raise ValueError(f"the budget must be > 0 minutes, got {tune_config.budget_minutes}")
    if tune_config.trials < 0 or tune_config.trial_minutes < 0:
        raise ValueError("tune.trials and tune.trial_minutes must be >= 0 (0: no limit)")
    if os.environ.get("TF_CONFIG"):
        raise ValueError("cml_tf.tune runs its trials in one process: unset TF_CONFIG (a "
                         "cluster trains the best config afterwards: cml_tf.main with "
                         "DIR/best_config.py)")
    if config.data.train_path and not config.data.valid_path:
        raise ValueError("tuning needs a validation set: with your own split give "
                         "--config.data.valid_path (the test set is read only by the final run)")


def _identity(config):
    """The config that names a study: without the keys that only say how long it runs."""
    identity = copy.deepcopy(config)
    with identity.unlocked():
        for key in BUDGET_KEYS:
            if key in identity.tune:
                del identity.tune[key]
    return identity


def tune(config, workdir, budget_minutes: float = None, trials: int = None,
         overwrite: bool = False, trainer=None) -> dict:
    """Runs (or continues) the study of ``config`` in ``workdir``, then the final run of its
    best trial; returns {"best": {...}, "trials": {state: count}, "study_seconds", "final":
    the final run's metrics, "workdir", "final_workdir"}.

    ``budget_minutes`` / ``trials`` override ``config.tune``'s. ``trainer(config, workdir,
    skip_test=False, callbacks=())`` trains one config (default
    ``cml_tf.train.train_and_evaluate``; the benchmark passes one for implicit's ALS).
    """
    from cml_tf.tuning import space, study as studies  # Optuna, not yet TensorFlow

    config = copy.deepcopy(config)  # (copy_and_resolve_references loses placeholder types)
    if budget_minutes is not None:
        config.tune.budget_minutes = float(budget_minutes)
    if trials is not None:
        config.tune.trials = int(trials)
    check_config(config)
    params = space.search_space(config)
    studies.make_pruner(config)  # a bad pruner name fails here, before the workdir is touched

    # pylint: disable=import-outside-toplevel
    import optuna

    from cml_tf import train
    from cml_tf.tuning import report, search, trial as runner

    trainer = trainer or train.train_and_evaluate
    if overwrite and pathlib.Path(workdir, ".tune.lock").exists():
        with studies.StudyLock(workdir):  # refuses while another tuner runs there
            pass
    run = workdir_lib.prepare(
        workdir, _identity(config).to_json_best_effort(sort_keys=True, indent=2), overwrite,
        layout=studies.STUDY_LAYOUT)
    workdir = run.path
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our line per trial says it all
    try:
        with studies.StudyLock(workdir), search.SkipRetracingNotes():
            try:
                study, seconds = _search(workdir, config, params, trainer)
            except BaseException:
                run.failed()  # a study replaced by --overwrite comes back if this one is empty
                raise
            run.started()
            best = report.best_trial(study)
            report.write_trials_csv(study, workdir / "trials.csv")
            report.plot(study, workdir / "tuning.png", config.tune.metric)
            best_config = runner.final_config(config, best.params)
            report.write_best_config(workdir, best_config, best, config)
            logging.info("best: trial %d, valid %s %.4f; final run in %s", best.number,
                         config.tune.metric, best.value, workdir / "final")
            final = _final_run(workdir, best_config, best, trainer)
            states = [t.state.name.lower() for t in study.trials]
            return {"workdir": str(workdir), "final_workdir": str(workdir / "final"),
                    "best": {"trial": best.number, "value": best.value, "params": best.params,
                             "metric": f"valid {config.tune.metric}"},
                    "trials": {s: states.count(s) for s in sorted(set(states))},
                    "study_seconds": seconds, "final": final}
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search(workdir, config, params, trainer):
    """(study, seconds it has spent): the study opened, its interrupted trials queued again,
    the config's own values queued first when it is new, and this session's trials run; a
    TuneError when no trial has a value."""
    # pylint: disable=import-outside-toplevel
    from optuna.trial import TrialState

    from cml_tf.tuning import report, search, space, study as studies

    study = studies.open_study(workdir, config)
    for number in studies.requeue_interrupted(study):
        logging.info("trial %d was interrupted: queued again", number)
    stored = len(study.get_trials(deepcopy=False))
    if not stored and config.tune.start_from_config:
        study.enqueue_trial(space.config_values(params, config))
    report.write_hparams_config(workdir, params, config.tune.metric)
    budget = studies.Budget(study, config.tune.budget_minutes)
    logging.info("study %s: %d trials stored, %.1f of %g minutes spent; searching %s of "
                 "tune.space.%s", workdir / "study.db", stored, budget.before / 60,
                 config.tune.budget_minutes, ", ".join(p.path for p in params),
                 space.space_name(config))
    failures = search.search(study, config, params, workdir, trainer, budget)
    seconds = budget.spent()
    if report.best_trial(study) is None:
        tried = len(study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
        raise TuneError(
            f"no trial finished with a validation value ({tried} tried in {seconds / 60:.2f} "
            f"of {config.tune.budget_minutes:g} minutes"
            + (f"; the last failure: {failures[-1]}" if failures else "")
            + "); raise --budget_minutes (or tune.trial_minutes) or fix the config")
    return study, seconds


def _final_run(workdir, config, best, trainer):
    """The best config trained into DIR/final. A finished final run of the same config is
    kept (its metrics returned); one of another config (an earlier best) is moved aside to
    final-<n>/, never deleted."""
    final = workdir / "final"
    config_json = config.to_json_best_effort(sort_keys=True, indent=2)
    if final.exists() and any(final.iterdir()):
        same = (final / "config.json").exists() and (
            final / "config.json").read_text() == config_json
        if same and (final / "metrics.json").exists():
            logging.info("the final run of trial %d is already in %s", best.number, final)
            return json.loads((final / "metrics.json").read_text())
        if not same:
            aside = next(workdir / f"final-{n}" for n in range(1, 10_000)
                         if not (workdir / f"final-{n}").exists())
            final.rename(aside)
            logging.info("%s held the final run of an earlier best: moved to %s", final, aside)
    return trainer(config, str(final))


# ---- command line -------------------------------------------------------------------------

USAGE = """\
usage: python -m cml_tf.tune [--config=FILE] [--workdir=DIR] [--budget_minutes=N] [--trials=M]
                             [--overwrite] [--config.<section>.<key>=VALUE ...]

Searches config.tune.space.<model> for the best validation config.tune.metric (an Optuna study
in DIR/study.db; the same command continues it), then trains the best config once in
DIR/final/ (test metrics, saved_model/).

flags:
  --config=FILE       experiment config (default: {default})
  --config.<section>.<key>=VALUE
                      override one key, e.g. a search range:
                      --config.tune.space.cml.model.margin='uniform 0.8 2.5'
  --workdir=DIR       where the study goes (default: a new temporary folder)
  --budget_minutes=N  wall clock of the whole study (default: config.tune.budget_minutes)
  --trials=M          stop after this many finished trials (default: config.tune.trials)
  --overwrite         replace the study in --workdir
  --help              this text
"""


def _define_flags(flag_values):
    flags.DEFINE_float("budget_minutes", None, "Wall clock of the whole study (default: "
                       "config.tune.budget_minutes).", flag_values=flag_values)
    flags.DEFINE_integer("trials", None, "Stop after this many finished trials (default: "
                         "config.tune.trials; 0: the budget decides).", flag_values=flag_values)


def main(argv=None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv``); returns the exit status. Flags
    and the config file are read as ``cml_tf.main`` reads them (one line for any mistake)."""
    argv = list(sys.argv if argv is None else argv)
    if any(argument in HELP_FLAGS for argument in argv[1:]):
        print(help_text(argv, USAGE))
        return 0
    workdir = None
    try:
        options = parse_command_line(argv, _define_flags)
        workdir = options.workdir or tempfile.mkdtemp(prefix="cml_tf_tune_")
        logging.info("workdir: %s", workdir)
        result = tune(options.config, workdir, budget_minutes=options.flag_values.budget_minutes,
                      trials=options.flag_values.trials, overwrite=options.overwrite)
    except KeyboardInterrupt:
        if workdir:
            print(f"interrupted: the same command continues the study in {workdir}",
                  file=sys.stderr)
        return 130
    except Exception as error:  # pylint: disable=broad-except
        if not isinstance(error, (CommandLineError, *_user_errors())):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    print(study_summary(result))
    return 0


def _user_errors() -> tuple:
    """The errors that are the input's fault (cml_tf.main's, TuneError, Optuna's). Classes of
    modules not imported yet cannot have been raised, so a bad search space fails before
    TensorFlow is even loaded."""
    kinds = [ValueError, OSError, TuneError]
    for module, names in (("cml_tf.train", ("WorkdirError", "TrainingDiverged")),
                          ("cml_tf.data.errors", ("DataError",)),
                          ("optuna.exceptions", ("OptunaError",))):
        if module in sys.modules:
            kinds += [getattr(sys.modules[module], name) for name in names]
    return tuple(kinds)


def study_summary(result: dict) -> str:
    """The study in a few lines, then the final run as ``cml_tf.main`` shows it."""
    best, workdir = result["best"], pathlib.Path(result["workdir"])
    counts = ", ".join(f"{n} {state}" for state, n in result["trials"].items())
    lines = ["", f"study: {sum(result['trials'].values())} trials ({counts}) in "
             f"{result['study_seconds'] / 60:.1f} min",
             f"  best: trial {best['trial']}, {best['metric']} {best['value']:.4f}: " + ", ".join(
                 f"{k}={v}" for k, v in best["params"].items()),
             f"  {workdir / 'trials.csv'}, {workdir / 'tuning.png'}",
             f"  python -m cml_tf.main --config={workdir / 'best_config.py'}",
             f"  tensorboard --logdir {workdir}   (HParams tab)"]
    return "\n".join(lines) + "\n" + summary(result["final"], result["final_workdir"])


def run():
    """Console-script entry point (``cml-tf-tune``)."""
    use_absl_logging()
    sys.exit(main())


if __name__ == "__main__":
    run()
