"""Keras callbacks of the training command: validation recall with early stopping, per-epoch
checkpoints that survive a crash and resume to the same result, a guard that stops on a NaN
loss, and the time of the training steps alone.

Checkpoints are written with ``tf.train.Checkpoint`` directly (not ``CheckpointManager``): a
resume must find the newest checkpoint that actually restores even when the newest files or the
``checkpoint`` state file are damaged, and the best validation epoch's checkpoint must outlive
the ``keep`` newest ones, since it holds the best weights.
"""

import json
import math
import os
import re
import time

import numpy as np
import tensorflow as tf
from absl import logging

from cml_tf.evaluation import evaluate


class CheckpointError(RuntimeError):
    """There are checkpoints, but none of them restores."""


def validation_users(split, n: int, seed: int):
    """The fixed sample of ``n`` validation users that validation scores (sorted indices), or
    None for every user (``n`` = 0 or at least the number of users with a validation item).

    Drawn once with ``numpy.random.default_rng(seed).choice(users, n, replace=False)`` from the
    users with at least one validation item, so every pass scores the same users.
    """
    if n < 0:
        raise ValueError(f"train.valid_users must be >= 0 (0: every user), got {n}")
    every = _users_with_validation_items(split)
    if n == 0 or n >= len(every):
        return None
    return np.sort(np.random.default_rng(seed).choice(every, size=n, replace=False))


def _users_with_validation_items(split) -> np.ndarray:
    heldout, unseen, _ = split.heldout("valid")
    return np.flatnonzero(np.diff(heldout.matrix.indptr) + unseen > 0)


class ValidationRecall(tf.keras.callbacks.Callback):
    """Every ``every`` epochs: validation metrics to the log, TensorBoard and ``history``.

    Early stopping on ``monitor`` (default ``recall@50``): after ``patience`` evaluations without
    improvement training stops, and at the end the best weights are restored: kept in memory,
    or, with ``best_weights_loader`` (set by :class:`EpochCheckpoint`, which keeps the best
    epoch's checkpoint), loaded from there; ``best_weights_path``: where they are then written
    (``checkpoints/best/weights`` in a workdir). :meth:`state` and :meth:`load_state` carry
    what a resumed run needs (history, best value and epoch, evaluations waited);
    :class:`EpochCheckpoint` saves it inside every checkpoint. ``users``: score only these user
    indices (a fixed sample, :func:`validation_users`; default every user with a validation
    item). ``seconds``: the duration of every validation pass of this process.
    """

    def __init__(self, split, every: int = 1, ks=(10, 50, 100), monitor: str = "recall@50",
                 patience: int = 0, restore_best: bool = True, log_dir: str = None,
                 best_weights_path: str = None, users=None):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        check_monitor(monitor, ks)
        self.split, self.every, self.ks, self.monitor = split, every, tuple(ks), monitor
        self.patience, self.restore_best = patience, restore_best
        self.users = users
        self._sample_note = ""
        if users is not None:
            self._sample_note = (f" on {len(users)} of "
                                 f"{len(_users_with_validation_items(split))} users")
        self.best_weights_path = best_weights_path
        self.best_weights_loader = None  # epoch -> bool: puts that epoch's weights in the model
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        self.history = []  # [{"epoch": e, "recall@50": ...}, ...]
        self.seconds = []
        self.best, self.best_epoch, self.best_weights, self.waited = -math.inf, None, None, 0

    def state(self) -> dict:
        return {"history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                "waited": self.waited}

    def load_state(self, state: dict):
        self.history = list(state["history"])
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.waited, self.best_weights = state["waited"], None

    @property
    def stopped(self) -> bool:
        """Early stopping has ended the run (also true of a resumed one that had stopped)."""
        return bool(self.patience) and self.waited >= self.patience

    def improvement_epochs(self) -> list:
        """The epochs whose validation ``monitor`` beat every earlier one, in order."""
        epochs, best = [], -math.inf
        for row in self.history:
            if row[self.monitor] > best:
                epochs.append(row["epoch"])
                best = row[self.monitor]
        return epochs

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every and done != self.params.get("epochs"):
            return
        start = time.perf_counter()
        metrics = evaluate(self.model, self.split, "valid", self.ks, users=self.users)
        self.seconds.append(time.perf_counter() - start)
        value = metrics[self.monitor]
        self.history.append({"epoch": done, **{k: v for k, v in metrics.items()
                                               if "@" in k}})
        if logs is not None:
            logs[f"val_{self.monitor}"] = value
        if self.writer:
            with self.writer.as_default(step=done):
                for name, metric in metrics.items():
                    if "@" in name:
                        tf.summary.scalar(f"validation/{name}", metric)
            self.writer.flush()
        improved = value > self.best
        if improved:
            self.best, self.best_epoch, self.waited = value, done, 0
            if self.restore_best and self.best_weights_loader is None:
                self.best_weights = self.model.get_weights()
        else:
            self.waited += 1
        logging.info("epoch %d: validation%s: %s = %.4f%s (recall@%d %.4f, %.1fs)", done,
                     self._sample_note, self.monitor, value, " (best)" if improved else
                     f" (best {self.best:.4f} at epoch {self.best_epoch})", self.ks[-1],
                     metrics[f"recall@{self.ks[-1]}"], self.seconds[-1])
        if self.stopped:
            logging.info("early stopping: no improvement of validation %s in %d evaluations",
                         self.monitor, self.patience)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if not self.restore_best or self.best_epoch is None:
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self.best_weights_loader is not None:
            if not self.best_weights_loader(self.best_epoch):
                return
        else:
            logging.warning("the weights of the best epoch (%d) are not available; keeping the "
                            "last ones", self.best_epoch)
            return
        if self.best_weights_path:
            self.model.save_weights(self.best_weights_path)
        logging.info("restored the weights of epoch %d (validation %s = %.4f)", self.best_epoch,
                     self.monitor, self.best)


def check_monitor(monitor: str, ks):
    if monitor not in {f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision")}:
        raise ValueError(f"monitor {monitor!r} is not among the metrics at k={tuple(ks)}")


class NanGuard(tf.keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite and remembers where."""

    def __init__(self):
        super().__init__()
        self.diverged_at = None  # (epoch, step), 1-based
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class EpochTimer(tf.keras.callbacks.Callback):
    """``seconds``: the duration of every epoch's training steps, from ``on_epoch_begin`` to
    ``on_epoch_end``. First in the callback list, it stops its clock before the validation pass
    and the checkpoint of the epoch run."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


_CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)\.(index|data-\d+-of-\d+)$")


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves the model and optimizer after every epoch (not after one whose loss went NaN),
    together with what a resume needs: the epoch and the ``validation`` callback's state.

    One checkpoint ``ckpt-<epoch>`` holds all of it (TensorFlow writes the ``.data`` before the
    ``.index``; a checkpoint counts once its ``.index`` exists), then the ``checkpoint`` state
    file (what ``tf.train.latest_checkpoint`` reads) and ``validation.json`` (the history, for
    readers of an unfinished run) are rewritten. All random state of a run is in it too: the
    models' sampling and dropout generators are variables, and the input order is a function of
    the seed and the epoch (:mod:`cml_tf.data.pipeline`).

    Kept: the ``keep`` newest checkpoints and those of the ``keep`` latest improvements of the
    validation metric (the best epoch's checkpoint holds the best weights, which the validation
    callback loads from it at the end).

    ``restore()`` before ``fit`` returns the number of epochs already done (0 for a fresh run),
    to be passed as ``initial_epoch``: from the newest checkpoint that restores, with one warning
    line for each newer one that does not; :class:`CheckpointError` when none does.
    ``on_first_save`` is called after the first checkpoint this process writes.
    """

    def __init__(self, directory: str, model, nan_guard: NanGuard = None, keep: int = 2,
                 validation: ValidationRecall = None, on_first_save=None):
        super().__init__()
        self.directory, self.keep = str(directory), int(keep)
        self.nan_guard, self.validation, self.on_first_save = nan_guard, validation, on_first_save
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.run_state = tf.Variable("", dtype=tf.string, trainable=False)
        self._model = model
        self.checkpoint = tf.train.Checkpoint(model=model, epoch=self.epoch,
                                              run_state=self.run_state)
        self.checkpoint.save_counter  # noqa: B018  (created now, so that write() saves it too)
        self.latest = None  # prefix of the checkpoint last written or restored
        self._saved = False
        if validation is not None:
            validation.best_weights_loader = self.restore_weights_of

    def _prefix(self, epoch: int) -> str:
        return os.path.join(self.directory, f"ckpt-{epoch}")

    def _files(self):
        """(epoch, file name) of every checkpoint file in the directory."""
        if not os.path.isdir(self.directory):
            return []
        found = ((_CHECKPOINT_FILE.match(name), name) for name in os.listdir(self.directory))
        return [(int(match.group(1)), name) for match, name in found if match]

    def epochs_saved(self) -> list:
        """Epochs with a complete checkpoint (its ``.index`` written), newest first."""
        return sorted({epoch for epoch, name in self._files() if name.endswith(".index")},
                      reverse=True)

    def restore(self) -> int:
        epochs = self.epochs_saved()
        if not epochs:
            return 0
        damaged = []
        for epoch in epochs:
            prefix = self._prefix(epoch)
            try:
                self.checkpoint.restore(prefix).assert_existing_objects_matched()
            except Exception as error:  # noqa: BLE001  (truncated files: IndexError, OpError...)
                reason = " ".join(str(error).split())[:200]
                logging.warning("checkpoint %s does not restore (%s: %s); trying the one before",
                                prefix, type(error).__name__, reason)
                damaged.append(f"{os.path.basename(prefix)}: {reason}")
                continue
            if not damaged:  # else the warning above said why this is not the newest
                self._warn_if_state_file_disagrees(epoch)
            state = json.loads(self.run_state.numpy().decode() or "{}")
            if self.validation is not None and state.get("validation"):
                self.validation.load_state(state["validation"])
            self.latest = prefix
            self._write_state_file([e for e in epochs if e <= epoch][:self.keep][::-1])
            logging.info("resuming from %s (epoch %d)", prefix, int(self.epoch))
            return int(self.epoch)
        raise CheckpointError(
            f"none of the checkpoints in {self.directory} restores ({'; '.join(damaged)}); move "
            "that folder away to train this run from the start")

    def restore_weights_of(self, epoch: int) -> bool:
        """Puts the weights of epoch ``epoch``'s checkpoint into the model; False (and the
        weights left as they are) after a NaN loss or when that checkpoint is missing."""
        if self.nan_guard is not None and self.nan_guard.diverged_at is not None:
            return False  # the run fails with TrainingDiverged, which says what happened
        prefix = self._prefix(epoch)
        if not os.path.exists(prefix + ".index"):
            logging.warning("the checkpoint of the best epoch (%s) is missing; keeping the "
                            "weights of the last epoch", prefix)
            return False
        tf.train.Checkpoint(model=self._model).restore(prefix).expect_partial()
        return True

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.diverged_at is not None:
            return
        done = epoch + 1
        self.epoch.assign(done)
        state = {"epoch": done}
        if self.validation is not None:
            state["validation"] = self.validation.state()
        self.run_state.assign(json.dumps(state))
        self.latest = self.checkpoint.write(self._prefix(done))
        kept = [e for e in self.epochs_saved() if e <= done][:self.keep]
        if self.validation is not None:
            kept += self.validation.improvement_epochs()[-self.keep:]
        kept = sorted(set(kept))
        self._write_state_file(kept)
        for number, name in sorted(self._files(), key=lambda f: not f[1].endswith(".index")):
            if number not in kept:  # the .index first: a half-deleted checkpoint never counts
                os.remove(os.path.join(self.directory, name))
        if self.validation is not None:
            _write_json(os.path.join(self.directory, "validation.json"), state["validation"])
        if not self._saved:
            self._saved = True
            if self.on_first_save is not None:
                self.on_first_save()

    def _write_state_file(self, epochs):
        lines = [f'model_checkpoint_path: "ckpt-{epochs[-1]}"']
        lines += [f'all_model_checkpoint_paths: "ckpt-{e}"' for e in epochs]
        _write_text(os.path.join(self.directory, "checkpoint"), "\n".join(lines) + "\n")

    def _warn_if_state_file_disagrees(self, epoch: int):
        path = os.path.join(self.directory, "checkpoint")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                named = re.search(r'^model_checkpoint_path: "(?:.*/)?([^/"]*)"$', f.read(), re.M)
        except OSError:
            named = None
        if named is None or named.group(1) != f"ckpt-{epoch}":
            logging.warning("the checkpoint state file %s is unreadable or names another "
                            "checkpoint (%s); resuming from ckpt-%d, the newest that restores",
                            path, named.group(1) if named else "none", epoch)


def _write_text(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _write_json(path, payload):
    _write_text(path, json.dumps(payload))
