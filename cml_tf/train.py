"""``train_and_evaluate(config, workdir)``: the one function the command line and notebooks call.

It loads the data and the split the config names, builds and trains the model with
``model.fit`` (validation recall, early stopping with best-weights restore, per-epoch checkpoints
that a re-run resumes from, TensorBoard), evaluates on the validation and test sets and writes
into ``workdir``:

    config.json      the full config of the run
    metrics.json     {"valid": {...}, "test": {...}, "train_seconds", "train_pairs_per_second",
                      "epochs", ...}
    checkpoints/     per-epoch model + optimizer state; best/ holds the best validation weights
    tensorboard/     training curves (loss parts) and validation metrics
    saved_model/<v>/ the exported SavedModel (when config.export.enabled)
    item_map.png, training_curves.png, tensorboard/projector_config.pbtxt + projector/
                     pictures of the item space and the curves (when config.viz.enabled)
"""

import json
import math
import os
import pathlib
import shutil
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from cml_tf import callbacks as cbs
from cml_tf import distribute
from cml_tf.data.from_config import load_data
from cml_tf.data.split import Split
from cml_tf.evaluation import evaluate
from cml_tf.models import build_model
from cml_tf.optimizers import SparseAdagrad


class WorkdirError(RuntimeError):
    """The workdir holds another or a finished run."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ---- workdir ---------------------------------------------------------------------------------


def prepare_workdir(workdir: str, config, overwrite: bool = False) -> pathlib.Path:
    """Creates ``workdir`` or checks that it may be used.

    A finished run (``metrics.json`` present) is refused unless ``overwrite``; an unfinished run
    with the same config is resumed; one with another config is refused.
    """
    path = pathlib.Path(workdir)
    config_json = config.to_json_best_effort(sort_keys=True, indent=2)
    if path.exists() and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
        elif (path / "metrics.json").exists():
            raise WorkdirError(f"{path} already holds a finished run (metrics.json); pass "
                               "--overwrite to replace it or choose another --workdir")
        elif (path / "config.json").exists():
            if (path / "config.json").read_text() != config_json:
                raise WorkdirError(f"{path} holds an unfinished run with a different config; "
                                   "pass --overwrite to replace it or choose another --workdir")
        else:
            raise WorkdirError(f"{path} is not empty and holds no run of ours; choose an empty "
                               "or new --workdir")
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config_json)
    return path


# ---- training --------------------------------------------------------------------------------


def make_optimizer(train_config):
    """The Keras optimizer named by ``train.optimizer``; "adagrad" is :class:`SparseAdagrad`,
    the same update made faster for embedding tables."""
    name = train_config.optimizer.lower()
    if name == "adagrad":
        return SparseAdagrad(learning_rate=train_config.learning_rate)
    try:
        optimizer_class = tf.keras.optimizers.get(name).__class__
    except ValueError as error:
        raise ValueError(f"unknown optimizer {train_config.optimizer!r}") from error
    return optimizer_class(learning_rate=train_config.learning_rate)


def check_config(config, split: Split):
    train = config.train
    for key in ("epochs", "batch_size", "eval_every"):
        if train[key] < 1:
            raise ValueError(f"train.{key} must be >= 1, got {train[key]}")
    if train.valid_users < 0:
        raise ValueError(f"train.valid_users must be >= 0 (0: every user), got "
                         f"{train.valid_users}")
    if not (train.learning_rate > 0 and math.isfinite(train.learning_rate)):
        raise ValueError(f"train.learning_rate must be > 0, got {train.learning_rate}")
    ks = tuple(config.eval.ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"eval.ks must be positive, got {ks}")
    if max(ks) > split.train.n_items:
        raise ValueError(f"eval.ks asks for K={max(ks)} but there are only "
                         f"{split.train.n_items} items")
    if config.export.enabled and config.export.k > split.train.n_items:
        raise ValueError(f"export.k={config.export.k} is larger than the number of items "
                         f"({split.train.n_items})")


def train_and_evaluate(config, workdir: str, overwrite: bool = False,
                       skip_test: bool = False, callbacks=()) -> dict:
    """Trains and evaluates the configured model; returns the metrics written to metrics.json.

    ``skip_test``: leave the test set alone (hyperparameter sweeps look at validation only).
    ``callbacks``: extra Keras callbacks, run after the validation pass: in ``on_epoch_end`` of
    an epoch with a validation pass ``logs[f"val_{config.train.monitor}"]`` holds the validation
    metric. They may set ``model.stop_training``; an exception they raise propagates unchanged.
    """
    distribution = distribute.from_config(config)  # first: it may configure the runtime
    if distribution.serves_only:  # a parameter-server cluster's worker or ps task
        distribute.serve(distribution.task)
    workdir = prepare_workdir(distribution.task_workdir(workdir, overwrite), config, overwrite)
    tf.keras.utils.set_random_seed(config.seed)
    start = time.time()
    split = load_data(config.data)
    logging.info("data: %s", split)
    check_config(config, split)
    load_seconds = time.time() - start

    with distribution.scope(table_rows=(split.train.n_users, split.train.n_items)):
        model = build_model(config.model, split.train, seed=config.seed,
                            jit_sampling=config.train.jit_sampling and not distribution.sharded)
        if config.train.jit_compile:
            blocker = getattr(model, "jit_compile_blocker", f"{type(model).__name__} is not "
                                                            "tested with it")
            if blocker:
                raise ValueError(f"train.jit_compile: XLA cannot compile this model's whole "
                                 f"train step ({blocker}); train.jit_sampling compiles its "
                                 "sampling")
        model.compile(optimizer=make_optimizer(config.train),
                      jit_compile=config.train.jit_compile)
    dataset, steps_per_epoch = distribution.fit_input(split.train, config.train.batch_size,
                                                      config.seed)

    nan_guard = distribution.nan_guard()
    checkpoint = cbs.EpochCheckpoint(str(workdir / "checkpoints"), model, nan_guard)
    initial_epoch = checkpoint.restore()
    # TensorBoard before the validation pass: it writes the epoch's training logs only, and
    # the validation callback writes validation/<metric> itself (once per pass).
    fit_callbacks = [nan_guard,
                     tf.keras.callbacks.TensorBoard(str(workdir / "tensorboard"),
                                                    write_graph=False, profile_batch=0)]
    validation = valid_users = None
    if split.valid is not None:
        valid_users = cbs.validation_users(split, config.train.valid_users,
                                           seed=config.data.split_seed)
        validation = cbs.ValidationRecall(
            split, every=config.train.eval_every, ks=tuple(config.eval.ks),
            monitor=config.train.monitor, patience=config.train.patience,
            log_dir=str(workdir / "tensorboard" / "validation"),
            state_dir=str(workdir / "checkpoints"), users=valid_users)
        fit_callbacks.append(validation)
    fit_callbacks += [*callbacks, checkpoint]

    logging.info("training %s for %d epochs (batch %d) into %s", type(model).__name__,
                 config.train.epochs, config.train.batch_size, workdir)
    train_start = time.time()
    history = model.fit(dataset, epochs=config.train.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks,
                        verbose=distribution.verbosity(_verbosity(config.train.verbose)))
    train_seconds = time.time() - train_start
    if nan_guard.diverged_at is not None:
        epoch, step = nan_guard.diverged_at
        raise TrainingDiverged(
            f"the loss became NaN at epoch {epoch}, step {step}; last good checkpoint: "
            f"{checkpoint.latest or 'none (diverged in the first epoch)'}")
    epochs_run = len(history.epoch)

    metrics = {"data": {"users": split.train.n_users, "items": split.train.n_items,
                        "train_interactions": split.train.n_interactions,
                        "items_without_training_interactions": int(
                            (split.train.item_counts() == 0).sum())},
               "epochs": initial_epoch + epochs_run,
               "train_seconds": train_seconds,
               "train_pairs_per_second": (split.train.n_interactions * epochs_run
                                          / max(train_seconds, 1e-9)),
               "load_seconds": load_seconds,
               "distribute": distribution.describe(model)}
    if not distribution.is_chief:  # the chief alone evaluates, exports and writes the workdir
        distribution.finish()
        return metrics
    if validation is not None and validation.best_epoch is not None:
        metrics["best_epoch"] = validation.best_epoch
        metrics["validation_history"] = validation.history
    for part in ("valid",) if skip_test else ("valid", "test"):
        if getattr(split, part) is not None:
            eval_start = time.time()
            metrics[part] = evaluate(model, split, part, tuple(config.eval.ks),
                                     users=valid_users if part == "valid" else None)
            metrics[f"{part}_eval_seconds"] = time.time() - eval_start
    for part in ("valid", "test"):
        if part in metrics:
            logging.info("%s: %s", part, _summary(metrics[part]))

    if config.get("viz") is not None and config.viz.enabled:  # pictures: cml_tf/viz.py
        from cml_tf import viz  # pylint: disable=import-outside-toplevel
        metrics["viz"] = viz.write_workdir_visuals(model, split, config, workdir, history,
                                                   validation)
    if config.export.enabled:
        metrics["export"] = _export(model, split, config, workdir)
    _write_json(workdir / "metrics.json", metrics)
    logging.info("wrote %s", workdir / "metrics.json")
    return metrics


def _verbosity(verbose: int) -> int:
    """A progress bar on a terminal or in a notebook; one line per epoch in a log file."""
    if verbose != 1 or sys.stdout.isatty() or "ipykernel" in sys.modules:
        return verbose
    return 2


def _export(model, split, config, workdir):
    try:
        from cml_tf import export  # pylint: disable=import-outside-toplevel
    except ImportError:  # the export module is optional until it lands
        logging.warning("export skipped: cml_tf.export is not available")
        return None
    return export.export_from_training(model, split, config, workdir)


def _summary(metrics):
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                     if k.startswith(("recall", "ndcg")))


def _write_json(path, payload):
    def default(value):
        if isinstance(value, (np.integer,)):
            return int(value)
        if isinstance(value, (np.floating,)):
            return float(value)
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"cannot write {type(value)} to JSON")
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=default))
    os.replace(tmp, path)
