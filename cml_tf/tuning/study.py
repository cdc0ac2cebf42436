"""The study in the workdir: ``DIR/study.db``, Optuna's RDB storage on SQLite.

* One tuner process per workdir: it holds an advisory lock on ``DIR/.tune.lock`` (``fcntl``;
  the system releases it when the process dies, even by SIGKILL). So when a tuner starts, no
  trial of the study is running, and a trial the storage still calls RUNNING was left by a
  killed process: it is marked FAIL and its parameters are queued again
  (``study.enqueue_trial``; Optuna's heartbeat would notice the trial only after its grace
  period). A trial stopped by Ctrl-C is marked FAIL by Optuna and queued again the same way.
* The sampler is TPE seeded with ``config.seed`` plus the number of trials already stored, so
  a resumed study draws reproducibly from where it stopped (not the sequence an uninterrupted
  run would have drawn: TPE's random state is not stored).
* The budget is the study's wall clock over all its sessions: the seconds spent are stored in
  the study after every trial (a trial a kill interrupted is not counted; it runs again). A
  trial is stopped at the end of the budget from its first training step on; its start (data,
  model, tracing) cannot be cut, so a study may overrun by that much.
"""

import fcntl
import pathlib
import time

import optuna
from optuna.trial import TrialState

from cml_tf.workdir import Layout

STUDY_NAME = "cml_tf"
# What a study's workdir holds; only these entries are ever cleared or moved aside with it.
STUDY_ENTRIES = frozenset({"config.json", "study.db", "study.db-journal", "trials", "final",
                           "trials.csv", "best_config.json", "best_config.py", "tuning.png",
                           "hparams", ".tune.lock"})
STUDY_LAYOUT = Layout(
    ours=lambda name: name in STUDY_ENTRIES or (name.startswith("final-")
                                                and name[len("final-"):].isdigit()),
    progress=lambda path: (path / "trials.csv").exists())  # written after each ended trial
MAX_RETRIES = 2  # a trial that keeps being killed (e.g. out of memory) is not retried forever


class StudyLock:
    """``with StudyLock(workdir):`` -- refuses (WorkdirError) while another tuner holds it."""

    def __init__(self, workdir):
        self.path = pathlib.Path(workdir) / ".tune.lock"
        self._file = None

    def __enter__(self):
        self._file = open(self.path, "a")  # noqa: SIM115 (held for the life of the study)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            from cml_tf.workdir import WorkdirError  # pylint: disable=import-outside-toplevel
            raise WorkdirError(f"another cml_tf.tune process is running the study in "
                               f"{self.path.parent}; wait for it or choose another --workdir")
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def make_pruner(config):
    """The pruner ``config.tune.pruner`` names; the steps it sees are epochs."""
    tune = config.tune
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.pruner_startup_trials,
                                           n_warmup_steps=tune.pruner_warmup_epochs)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=config.train.eval_every,
                                              max_resource=config.train.epochs)
    if tune.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune.pruner must be 'median', 'hyperband' or 'none', got "
                     f"{tune.pruner!r}")


def open_study(workdir, config) -> optuna.Study:
    """The study of ``DIR/study.db`` (created when new), with the seeded TPE sampler and the
    configured pruner."""
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{pathlib.Path(workdir).resolve() / 'study.db'}",
        engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        stored = len(storage.get_all_trials(storage.get_study_id_from_name(STUDY_NAME)))
    except KeyError:
        stored = 0
    sampler = optuna.samplers.TPESampler(seed=int(config.seed) + stored,
                                         n_startup_trials=config.tune.sampler_startup_trials)
    return optuna.create_study(storage=storage, sampler=sampler, pruner=make_pruner(config),
                               study_name=STUDY_NAME, direction="maximize", load_if_exists=True)


def requeue_interrupted(study) -> list:
    """Marks RUNNING trials FAIL (their process is gone: we hold the lock) and queues every
    interrupted trial again once, with its parameters (user attribute ``retry_of``); returns
    the numbers of the trials queued again."""
    storage = study._storage  # pylint: disable=protected-access
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    queued = []
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        elif not (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted")):
            continue
        if trial.number in retried or _retries(trial, trials) >= MAX_RETRIES:
            continue
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        queued.append(trial.number)
    return queued


def _retries(trial, trials) -> int:
    """How many times the parameters of ``trial`` were queued again before it."""
    count = 0
    while "retry_of" in trial.user_attrs:
        trial, count = trials[trial.user_attrs["retry_of"]], count + 1
    return count


def finished(study) -> list:
    """The trials that count towards ``tune.trials``: complete or pruned."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


class Budget:
    """The study's remaining wall clock: ``minutes`` minus the seconds of earlier sessions
    (stored in the study) and of this one."""

    def __init__(self, study, minutes: float):
        self.study, self.seconds = study, float(minutes) * 60.0
        self.before = float(study.user_attrs.get("seconds", 0.0))
        self.start = time.monotonic()

    def spent(self) -> float:
        return self.before + time.monotonic() - self.start

    def remaining(self) -> float:
        return self.seconds - self.spent()

    def deadline(self) -> float:
        """The time.monotonic() at which the budget ends."""
        return self.start + self.seconds - self.before

    def record(self):
        self.study.set_user_attr("seconds", self.spent())
