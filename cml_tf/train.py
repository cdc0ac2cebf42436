"""``train_and_evaluate(config, workdir)``: the one function the command line and notebooks call.

It loads the data and the split the config names, builds and trains the model with
``model.fit`` (validation recall, early stopping with best-weights restore, per-epoch checkpoints
that a re-run resumes from, TensorBoard), evaluates on the validation and test sets and writes
into ``workdir``:

    config.json      the full config of the run
    metrics.json     {"valid": {...}, "test": {...}, "epochs", "train_seconds" (steps only),
                      "train_pairs_per_second", "epoch_seconds", "valid_eval_seconds",
                      "test_eval_seconds", "learned_nothing", ...}
    checkpoints/     per-epoch model, optimizer, random and validation state (one checkpoint
                     each, :class:`~cml_tf.callbacks.EpochCheckpoint`); best/ holds the best
                     validation weights
    tensorboard/     training curves (loss parts) and validation metrics
    saved_model/<v>/ the exported SavedModel (when config.export.enabled)
    item_map.png, training_curves.png, tensorboard/projector_config.pbtxt + projector/
                     pictures of the item space and the curves (when config.viz.enabled)
"""

import copy
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from cml_tf import callbacks as cbs
from cml_tf import distribute
from cml_tf import workdir as workdir_lib
from cml_tf.data.from_config import absolute_paths, load_data
from cml_tf.data.split import Split
from cml_tf.evaluation import evaluate
from cml_tf.metrics import ranking_metrics
from cml_tf.models import build_model
from cml_tf.optimizers import SparseAdagrad
from cml_tf.serving.module import INDEXES
from cml_tf.serving.spec import _as_ids as export_ids
from cml_tf.workdir import WorkdirError  # noqa: F401  (train.WorkdirError, CONTRACTS.md 6)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ---- checks before anything is written --------------------------------------------------------


def learning_rate(train_config, steps_per_epoch: int = 1):
    """``train.learning_rate``, or with ``train.lr_decay`` > 0 a cosine schedule over
    ``train.epochs`` epochs of ``steps_per_epoch`` steps from it to ``learning_rate * (1 -
    lr_decay)``. The schedule follows the optimizer's step count, which checkpoints keep."""
    decay = getattr(train_config, "lr_decay", 0.0)
    if not 0 <= decay < 1:
        raise ValueError(f"train.lr_decay must be in [0, 1), got {decay}")
    if not decay:
        return train_config.learning_rate
    return tf.keras.optimizers.schedules.CosineDecay(
        train_config.learning_rate, decay_steps=max(1, train_config.epochs * steps_per_epoch),
        alpha=1.0 - decay)


def make_optimizer(train_config, steps_per_epoch: int = 1):
    """The Keras optimizer named by ``train.optimizer``; "adagrad" is :class:`SparseAdagrad`,
    the same update made faster for embedding tables."""
    name = train_config.optimizer.lower()
    rate = learning_rate(train_config, steps_per_epoch)
    if name == "adagrad":
        return SparseAdagrad(learning_rate=rate)
    try:
        optimizer_class = tf.keras.optimizers.get(name).__class__
    except ValueError as error:
        raise ValueError(f"unknown optimizer {train_config.optimizer!r}") from error
    return optimizer_class(learning_rate=rate)


def check_config(config, split: Split = None):
    """Refuses (ValueError) what would fail later: the settings alone, and with ``split`` what
    depends on the data (cut-offs and export k against the items, ids the export cannot
    store). ``train_and_evaluate`` runs both before it writes anything or trains a step."""
    train = config.train
    if split is None:
        for key in ("epochs", "batch_size", "eval_every"):
            if train[key] < 1:
                raise ValueError(f"train.{key} must be >= 1, got {train[key]}")
        for key, meaning in (("valid_users", "0: every user"), ("patience", "0: off")):
            if train[key] < 0:
                raise ValueError(f"train.{key} must be >= 0 ({meaning}), got {train[key]}")
        if not (train.learning_rate > 0 and math.isfinite(train.learning_rate)):
            raise ValueError(f"train.learning_rate must be > 0, got {train.learning_rate}")
        make_optimizer(train)
        ks = tuple(config.eval.ks)
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                             for k in ks):
            raise ValueError(f"eval.ks must be whole numbers >= 1, as in "
                             f"--config.eval.ks='(10,50,100)'; got {config.eval.ks!r}")
        if config.export.enabled:
            _check_export_settings(config.export)
        return
    ks = tuple(config.eval.ks)
    if max(ks) > split.train.n_items:
        raise ValueError(f"eval.ks asks for K={max(ks)} but there are only "
                         f"{split.train.n_items} items")
    try:
        cbs.check_monitor(train.monitor, ks)
    except ValueError as error:
        raise ValueError(f"train.{error}") from None
    if config.export.enabled:
        if config.export.k > split.train.n_items:
            raise ValueError(f"export.k={config.export.k} is larger than the number of items "
                             f"({split.train.n_items})")
        for kind in ("user", "item"):  # the export's own rule, checked before training
            try:
                export_ids(getattr(split.train, f"{kind}_ids"), kind)
            except ValueError as error:
                raise ValueError(f"cannot export this data (export.enabled=False trains "
                                 f"without exporting): {error}") from None


def _check_export_settings(export):
    if export.index not in INDEXES:
        raise ValueError(f"export.index must be one of {INDEXES}, got {export.index!r}")
    if export.k < 1:
        raise ValueError(f"export.k must be >= 1, got {export.k}")
    if export.get("version", 0) < 0:
        raise ValueError(f"export.version must be >= 0 (0: the next free one), got "
                         f"{export.version}")
    if not 0 <= export.get("recall_target", 0) <= 1:
        raise ValueError(f"export.recall_target must be in [0, 1], got {export.recall_target}")
    for key in ("tune_users", "report_users", "report_queries"):
        if export.get(key, 0) < 0:
            raise ValueError(f"export.{key} must be >= 0, got {export[key]}")


def build_and_compile(config, split: Split, distribution):
    """The model and its optimizer, built in the strategy's scope."""
    # An epoch's optimizer steps (one per global batch, whatever the strategy), which a
    # train.lr_decay schedule counts.
    epoch_steps = max(1, -(-split.train.n_interactions // config.train.batch_size))
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
        model.compile(optimizer=make_optimizer(config.train, epoch_steps),
                      jit_compile=config.train.jit_compile)
    return model


# ---- training --------------------------------------------------------------------------------


def train_and_evaluate(config, workdir: str, overwrite: bool = False,
                       skip_test: bool = False, callbacks=()) -> dict:
    """Trains and evaluates the configured model; returns the metrics written to metrics.json.

    Everything that can be checked (the config, the data, the model's hyperparameters) is
    checked before the workdir is touched. ``overwrite`` replaces a finished run, which is kept
    aside until this run has written its first checkpoint and restored if it fails before
    (:mod:`cml_tf.workdir`). An unfinished run with the same config resumes from its newest
    checkpoint that restores, to the same result as an uninterrupted run.

    ``skip_test``: leave the test set alone (hyperparameter sweeps look at validation only).
    ``callbacks``: extra Keras callbacks, run after the validation pass: in ``on_epoch_end`` of
    an epoch with a validation pass ``logs[f"val_{config.train.monitor}"]`` holds the validation
    metric. They may set ``model.stop_training``; an exception they raise propagates unchanged.

    Relative data paths are read from the current folder and recorded absolute in config.json
    (the caller's ``config`` is left as it is).
    """
    config = copy.deepcopy(config)
    absolute_paths(config.data)
    distribution = distribute.from_config(config)  # first: it may configure the runtime
    if distribution.serves_only:  # a parameter-server cluster's worker or ps task
        distribute.serve(distribution.task)
    check_config(config)
    tf.keras.utils.set_random_seed(config.seed)
    start = time.time()
    split = load_data(config.data)
    logging.info("data: %s", split)
    check_config(config, split)
    model = build_and_compile(config, split, distribution)
    load_seconds = time.time() - start

    run = workdir_lib.prepare(distribution.task_workdir(workdir, overwrite),
                              config.to_json_best_effort(sort_keys=True, indent=2), overwrite)
    try:
        return _train_and_evaluate(config, split, model, distribution, run, skip_test,
                                   callbacks, load_seconds)
    except BaseException:
        try:
            run.failed()  # nothing happens once the run has its first checkpoint
        except WorkdirError as error:
            logging.error("could not restore the replaced run: %s", error)
        raise


def _train_and_evaluate(config, split, model, distribution, run, skip_test, callbacks,
                        load_seconds):
    workdir = run.path
    timer, nan_guard = cbs.EpochTimer(), distribution.nan_guard()
    # TensorBoard before the validation pass: it writes the epoch's training logs only, and
    # the validation callback writes validation/<metric> itself (once per pass).
    fit_callbacks = [timer, nan_guard,
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
            best_weights_path=str(workdir / "checkpoints" / "best" / "weights"),
            users=valid_users)
        fit_callbacks.append(validation)
    checkpoint = cbs.EpochCheckpoint(str(workdir / "checkpoints"), model, nan_guard,
                                     validation=validation, on_first_save=run.started)
    fit_callbacks += [*callbacks, checkpoint]  # the checkpoint last: it saves the epoch's state
    try:
        initial_epoch = checkpoint.restore()
    except cbs.CheckpointError as error:
        raise WorkdirError(str(error)) from None
    epochs = config.train.epochs
    if validation is not None and validation.stopped:
        epochs = initial_epoch  # it had stopped early; the best weights are restored below

    logging.info("training %s for %d epochs (batch %d) into %s", type(model).__name__,
                 config.train.epochs, config.train.batch_size, workdir)
    dataset, steps_per_epoch = distribution.fit_input(
        split.train, config.train.batch_size, config.seed, first_epoch=initial_epoch)
    fit_start = time.time()
    history = model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks,
                        verbose=distribution.verbosity(_verbosity(config.train.verbose)))
    fit_seconds = time.time() - fit_start
    if nan_guard.diverged_at is not None:
        epoch, step = nan_guard.diverged_at
        raise TrainingDiverged(
            f"the loss became NaN at epoch {epoch}, step {step}; last good checkpoint: "
            f"{checkpoint.latest or 'none (diverged in the first epoch)'}")
    epochs_run = len(history.epoch)
    train_seconds = float(sum(timer.seconds))

    metrics = {"data": {"users": split.train.n_users, "items": split.train.n_items,
                        "train_interactions": split.train.n_interactions,
                        "items_without_training_interactions": int(
                            (split.train.item_counts() == 0).sum())},
               "epochs": initial_epoch + epochs_run,
               "train_seconds": train_seconds,
               "train_pairs_per_second": (split.train.n_interactions * epochs_run
                                          / train_seconds if epochs_run else 0.0),
               "epoch_seconds": list(timer.seconds),
               "valid_eval_seconds": list(validation.seconds) if validation else [],
               "fit_seconds": fit_seconds,
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
            key = "test_eval_seconds" if part == "test" else "final_valid_eval_seconds"
            metrics[key] = time.time() - eval_start
    for part in ("valid", "test"):
        if part in metrics:
            logging.info("%s: %s", part, _summary(metrics[part]))
    warnings = metrics["warnings"] = []
    if "valid" in metrics:
        _compare_with_popularity(metrics, split, config, valid_users)

    if config.get("viz") is not None and config.viz.enabled:  # pictures: cml_tf/viz.py
        from cml_tf import viz  # pylint: disable=import-outside-toplevel
        metrics["viz"] = viz.write_workdir_visuals(model, split, config, workdir, history,
                                                   validation)
    if config.export.enabled:
        if metrics.get("learned_nothing") and not config.export.get("allow_untrained", False):
            refusal = ("not exported: the model learned nothing useful (set "
                       "export.allow_untrained=True to export it anyway)")
            logging.warning(refusal)
            warnings.append(refusal)
            metrics["export"] = {"refused": refusal}
        else:
            metrics["export"] = _export(model, split, config, workdir)
    _write_json(workdir / "metrics.json", metrics)
    logging.info("wrote %s", workdir / "metrics.json")
    return metrics


def popularity_metrics(split: Split, part: str, ks, users=None) -> dict:
    """The metrics of recommending every user the most liked training items (ties by index):
    the floor any trained model should clear."""
    counts = tf.constant(np.asarray(split.train.matrix.getnnz(axis=0)), tf.float32)
    heldout, unseen, exclude = split.heldout(part)

    def score(user_indices):
        return tf.broadcast_to(counts[None, :], [tf.size(user_indices), counts.shape[0]])

    return ranking_metrics(score, heldout.matrix, exclude=exclude, unseen=unseen, ks=ks,
                           users=users)


def _compare_with_popularity(metrics, split, config, valid_users):
    """``learned_nothing``: the final validation metric is below the popularity baseline's on
    the same users (e.g. a learning rate so large that every step throws the vectors around)."""
    monitor = config.train.monitor
    baseline = popularity_metrics(split, "valid", tuple(config.eval.ks), users=valid_users)
    metrics["valid_popularity"] = {k: v for k, v in baseline.items() if "@" in k}
    metrics["learned_nothing"] = bool(metrics["valid"][monitor] < baseline[monitor])
    if metrics["learned_nothing"]:
        message = (f"the model learned nothing useful: validation {monitor} "
                   f"{metrics['valid'][monitor]:.4f} is below the popularity baseline's "
                   f"{baseline[monitor]:.4f} (the most liked items for everyone)")
        logging.warning("%s", message)
        metrics["warnings"].append(message)


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
