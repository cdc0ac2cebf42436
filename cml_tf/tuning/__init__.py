"""The parts of ``cml_tf.tune`` (the command and ``tune()`` live in cml_tf/tune.py):

space.py    search spaces as config strings -> Optuna distributions, checked against the config
trial.py    a trial's config, the Keras callback feeding Optuna's pruner and the time limits, the
            objective
study.py    the SQLite study in the workdir: lock, resuming interrupted trials, the budget
search.py   one session: study.optimize with a line, trials.csv and an HParams session per trial
report.py   trials.csv, best_config.{json,py}, tuning.png, TensorBoard's HParams dashboard
"""
