"""Keras callbacks of the training command: validation recall with early stopping, per-epoch
checkpoints that survive a crash, and a guard that stops on a NaN loss."""

import json
import math
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from cml_tf.evaluation import evaluate


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
    improvement training stops, and at the end the best weights are restored. The best weights
    and the evaluation history are kept in ``state_dir`` so a resumed run continues where the
    interrupted one stopped. ``users``: score only these user indices (a fixed sample,
    :func:`validation_users`; default every user with a validation item).
    """

    def __init__(self, split, every: int = 1, ks=(10, 50, 100), monitor: str = "recall@50",
                 patience: int = 0, restore_best: bool = True, log_dir: str = None,
                 state_dir: str = None, users=None):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if monitor not in {f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision")}:
            raise ValueError(f"monitor {monitor!r} is not among the metrics at k={tuple(ks)}")
        self.split, self.every, self.ks, self.monitor = split, every, tuple(ks), monitor
        self.patience, self.restore_best = patience, restore_best
        self.users = users
        self._sample_note = ""
        if users is not None:
            self._sample_note = (f" on {len(users)} of "
                                 f"{len(_users_with_validation_items(split))} users")
        self.state_dir = state_dir
        self.writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        self.history = []  # [{"epoch": e, "recall@50": ...}, ...]
        self.best, self.best_epoch, self.best_weights, self.waited = -math.inf, None, None, 0
        self._load_state()

    # persisted state: history, best value and the best weights
    def _state_file(self):
        return os.path.join(self.state_dir, "validation.json") if self.state_dir else None

    def _load_state(self):
        path = self._state_file()
        if path and os.path.exists(path):
            with open(path) as f:
                state = json.load(f)
            self.history = state["history"]
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.waited = state["waited"]

    def _save_state(self):
        path = self._state_file()
        if path:
            os.makedirs(self.state_dir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump({"history": self.history, "best": self.best,
                           "best_epoch": self.best_epoch, "waited": self.waited}, f)
            os.replace(path + ".tmp", path)

    def _best_weights_prefix(self):
        return os.path.join(self.state_dir, "best", "weights") if self.state_dir else None

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every and done != self.params.get("epochs"):
            return
        start = time.time()
        metrics = evaluate(self.model, self.split, "valid", self.ks, users=self.users)
        seconds = time.time() - start
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
            self.best_weights = self.model.get_weights()
            prefix = self._best_weights_prefix()
            if prefix:
                self.model.save_weights(prefix)
        else:
            self.waited += 1
        logging.info("epoch %d: validation%s: %s = %.4f%s (recall@%d %.4f, %.1fs)", done,
                     self._sample_note, self.monitor, value, " (best)" if improved else
                     f" (best {self.best:.4f} at epoch {self.best_epoch})", self.ks[-1],
                     metrics[f"recall@{self.ks[-1]}"], seconds)
        self._save_state()
        if self.patience and self.waited >= self.patience:
            logging.info("early stopping: no improvement of validation %s in %d evaluations",
                         self.monitor, self.patience)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if not self.restore_best or self.best_epoch is None:
            return
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self._best_weights_prefix():
            self.model.load_weights(self._best_weights_prefix())
        logging.info("restored the weights of epoch %d (validation %s = %.4f)", self.best_epoch,
                     self.monitor, self.best)


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


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves model and optimizer state after every epoch (not after one whose loss went NaN).

    ``restore()`` before ``fit`` returns the number of epochs already done (0 for a fresh run),
    to be passed as ``initial_epoch``.
    """

    def __init__(self, directory: str, model, nan_guard: NanGuard = None, keep: int = 2):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=model, epoch=self.epoch)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.nan_guard = nan_guard

    def restore(self) -> int:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest)
        logging.info("resuming from %s (epoch %d)", latest, int(self.epoch))
        return int(self.epoch)

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.diverged_at is not None:
            return
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
