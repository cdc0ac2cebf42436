"""What a study shows a person: one log line per trial, ``trials.csv``, ``best_config.json`` /
``best_config.py``, TensorBoard's HParams dashboard, and ``tuning.png``.

The table is Optuna's ``trials_dataframe`` and the importances Optuna's
``optuna.importance.get_param_importances`` (fANOVA); the picture is drawn here with matplotlib
because Optuna's matplotlib plots are one figure each, and one picture shows both, with the
pruned trials marked.
"""

import json
import math
import pathlib

import optuna
from optuna.trial import TrialState

from cml_tf.tuning import space

_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
           TrialState.FAIL: "failed", TrialState.RUNNING: "running",
           TrialState.WAITING: "waiting"}


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def changed(trial, config) -> dict:
    """The trial's parameters whose value differs from the config's."""
    return {path: value for path, value in trial.params.items()
            if not space.has_key(config, path) or space.get(config, path) != value}


def trial_line(trial, config, study) -> str:
    """``trial 3 complete: model.margin=0.83 | valid recall@50 0.2712 | 35 epochs | 48 s |
    best 0.2790 (trial 1)``."""
    state = _STATES.get(trial.state, str(trial.state))
    diff = changed(trial, config)
    params = ", ".join(f"{k}={_number(v)}" for k, v in diff.items()) or "the config's values"
    epochs = trial.user_attrs.get("epochs")
    seconds = trial.duration.total_seconds() if trial.duration else float("nan")
    metric = config.tune.metric
    if trial.state == TrialState.COMPLETE:
        result = f"valid {metric} {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED and trial.intermediate_values:
        step = max(trial.intermediate_values)
        result = f"valid {metric} {trial.intermediate_values[step]:.4f} at epoch {step}"
    else:
        result = trial.user_attrs.get("error") or ("interrupted" if trial.user_attrs.get(
            "interrupted") else "no value")
    parts = [f"trial {trial.number} {state}: {params}", result]
    if epochs is not None:
        parts.append(f"{epochs} epochs" + (f" (stopped: {trial.user_attrs['stopped']})"
                                           if trial.user_attrs.get("stopped") else ""))
    parts.append(f"{seconds:.0f} s")
    best = best_trial(study)
    if best is not None:
        parts.append(f"best {best.value:.4f} (trial {best.number})")
    return " | ".join(parts)


def best_trial(study):
    """Optuna's best trial (the complete one with the highest value), or None."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def write_trials_csv(study, path):
    """Every trial: number, state, objective (the validation metric; a pruned trial's at its
    last evaluation), seconds, epochs, parameters, the other validation metrics and notes
    (Optuna's trials_dataframe, columns renamed)."""
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params",
                                          "user_attrs"))
    if frame.empty:
        return
    frame["seconds"] = frame.pop("duration").dt.total_seconds().round(1)
    frame = frame.rename(columns=lambda c: c.removeprefix("params_").removeprefix("user_attrs_"))
    frame = frame.rename(columns={"value": "objective"})
    first = [c for c in ("number", "state", "objective", "seconds", "epochs") if c in frame]
    params = sorted({p for t in study.get_trials(deepcopy=False) for p in t.params})
    rest = [c for c in frame.columns if c not in first and c not in params]
    frame[first + params + rest].to_csv(path, index=False)


def config_source(config, header: str) -> str:
    """A config file (``get_config()``) that rebuilds ``config`` exactly, placeholders (typed
    ``None`` values) included, so it runs with ``python -m cml_tf.main --config=<it>`` and
    accepts the usual overrides."""
    def literal(section, indent):
        pad = " " * (indent + 4)
        lines = []
        for key in section.keys():
            value = section[key]
            if hasattr(value, "keys"):
                text = literal(value, indent + 4)
            elif value is None and _placeholder_type(section, key):
                text = f"placeholder({_placeholder_type(section, key).__name__})"
            elif isinstance(value, float) and not math.isfinite(value):
                text = f"float({str(value)!r})"
            else:
                text = repr(value)
            lines.append(f"{pad}{key!r}: {text},")
        return "ml_collections.ConfigDict({\n" + "\n".join(lines) + "\n" + " " * indent + "})"

    return (f'"""{header}"""\n\nimport ml_collections\n'
            "from ml_collections.config_dict import placeholder  # noqa: F401\n\n\n"
            f"def get_config():\n    return {literal(config, 4)}\n")


def _placeholder_type(section, key):
    """The type of a ``placeholder(type)`` field, None for a plain None."""
    try:
        kind = section.get_ref(key).get_type()
    except ValueError:  # a plain None has no reference
        return None
    return None if kind is type(None) else kind


def write_best_config(workdir, config, trial, study_config):
    """``best_config.json`` (the trial, its value and parameters, those that differ from the
    study's config, the whole config) and ``best_config.py``."""
    workdir = pathlib.Path(workdir)
    metric = config.tune.metric
    record = {"trial": trial.number, "metric": f"valid {metric}", "value": trial.value,
              "params": trial.params, "changed": changed(trial, study_config),
              "config": json.loads(config.to_json_best_effort())}
    (workdir / "best_config.json").write_text(json.dumps(record, indent=2))
    header = (f"The best config of the study in {workdir} (written by cml_tf.tune): trial "
              f"{trial.number}, valid {metric} {trial.value:.4f}.\n\n    python -m cml_tf.main "
              f"--config={workdir / 'best_config.py'} --workdir=DIR\n\nTuned: " + ", ".join(
                  f"{k}={_number(v)}" for k, v in trial.params.items()) + "\n")
    (workdir / "best_config.py").write_text(config_source(config, header))


def plot(study, path, metric: str) -> bool:
    """``tuning.png``: the validation metric of every trial (pruned ones at their last
    evaluation) with the running best, and the parameter importances. False when there is no
    finished trial to show."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    import matplotlib.ticker  # noqa: F401  pylint: disable=import-outside-toplevel

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if not complete:
        return False
    importances = _importances(study)
    figure, axes = plt.subplots(1, 2 if importances else 1, figsize=(11 if importances else 6,
                                                                      3.8), squeeze=False)
    ax = axes[0][0]
    ax.scatter([t.number for t in complete], [t.value for t in complete], label="complete",
               color="tab:blue", zorder=3)
    if pruned:
        ax.scatter([t.number for t in pruned],
                   [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   marker="x", color="tab:gray", label="pruned (last evaluation)", zorder=2)
    best, numbers, values = -math.inf, [], []
    for t in sorted(complete, key=lambda t: t.number):
        best = max(best, t.value)
        numbers.append(t.number)
        values.append(best)
    last = max(t.number for t in trials)
    ax.step(numbers + [last], values + [best], where="post", color="tab:red",
            label="best so far")
    failed = sum(t.state == TrialState.FAIL for t in trials)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{len(trials)} trials: {len(complete)} complete, {len(pruned)} pruned"
                 + (f", {failed} failed" if failed else ""), fontsize=10)
    ax.legend(loc="best", fontsize=8, framealpha=0.6)
    ax.grid(alpha=0.3)
    if importances:
        ax = axes[0][1]
        names = list(importances)[:10][::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:green")
        ax.set_xlabel("importance (Optuna's fANOVA)")
        ax.set_title(f"parameter importances ({len(complete)} complete trials)", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


def _importances(study) -> dict:
    """Optuna's parameter importances of the complete trials ({} when it cannot tell: fewer
    than two complete trials or nothing varied)."""
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


# ---- TensorBoard's HParams dashboard ------------------------------------------------------

def write_hparams_config(workdir, params, metric: str):
    """The experiment: the searched parameters with their domains and the metrics shown."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel

    folder = pathlib.Path(workdir) / "hparams"
    if folder.exists():
        return
    hparams = [hp.HParam(p.path, _domain(hp, p.distribution)) for p in params]
    hparams.append(hp.HParam("state", hp.Discrete(["complete", "pruned", "failed"])))
    metrics = [hp.Metric("tune/objective", display_name=f"valid {metric} (trial)"),
               hp.Metric(f"validation/{metric}", group="validation",
                         display_name=f"valid {metric} (last evaluation)"),
               hp.Metric("tune/epochs", display_name="epochs"),
               hp.Metric("tune/seconds", display_name="seconds")]
    with tf.summary.create_file_writer(str(folder)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)


def write_hparams_session(workdir, trial):
    """A trial as one HParams session in ``DIR/trials/<n>/tensorboard`` (beside its training
    curves, whose ``validation/`` run holds the per-evaluation metrics)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=import-outside-toplevel

    folder = pathlib.Path(workdir) / "trials" / str(trial.number) / "tensorboard"
    folder.mkdir(parents=True, exist_ok=True)
    state = _STATES.get(trial.state, "failed")
    values = {**trial.params, "state": state if state in ("complete", "pruned") else "failed"}
    epochs = int(trial.user_attrs.get("epochs") or 0)
    with tf.summary.create_file_writer(str(folder)).as_default():
        hp.hparams(values, trial_id=f"trial {trial.number}")
        value = trial.value if trial.state == TrialState.COMPLETE else (
            trial.intermediate_values[max(trial.intermediate_values)]
            if trial.intermediate_values else None)
        if value is not None:
            tf.summary.scalar("tune/objective", value, step=epochs)
        tf.summary.scalar("tune/epochs", epochs, step=epochs)
        if trial.duration:
            tf.summary.scalar("tune/seconds", trial.duration.total_seconds(), step=epochs)


def _domain(hp, distribution):
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        kinds = {type(c) for c in distribution.choices}
        if len(kinds) == 1 and kinds <= {bool, int, float, str}:
            return hp.Discrete(list(distribution.choices))
        return None
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return hp.IntInterval(distribution.low, distribution.high)
    return hp.RealInterval(float(distribution.low), float(distribution.high))
