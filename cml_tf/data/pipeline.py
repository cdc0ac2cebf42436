"""tf.data input: shuffled batches of positive (user, item) index pairs.

Every pass over the dataset (every Keras epoch) draws a fresh permutation of all positive pairs
from ``seed`` and the pass number, so runs are reproducible and epochs differ. Batches are cut
from the permuted pair table by slicing (no per-element work), then prefetched.

With ``first_epoch`` the dataset is the endless sequence of passes ``first_epoch``,
``first_epoch + 1``, ..., pass e permuted by ``stateless_shuffle(seed=(seed, e))``: a function
of the seed and the epoch only, so a run resumed at epoch e in a new process reads exactly the
batches the uninterrupted run would have read (``train_and_evaluate`` uses it, with
``steps_per_epoch = batches_per_epoch(...)``).

tf.data's autotuning is switched off: the pipeline is two cheap ops with nothing to tune, and
its background thread made the teardown of an iterator stall for 0.2-0.3 s about every other
time on a 2-core machine. Keras builds a new iterator every epoch, so with epochs of a few
steps (citeulike-t at batch 8192: 11) that was a fifth of ``model.fit``'s time. (The models'
``fit`` now reads a finite dataset through one repeated iterator: :mod:`cml_tf.models.fitting`.)
"""

import numpy as np
import tensorflow as tf

from cml_tf.data.interactions import Interactions


def batches_per_epoch(train: Interactions, batch_size: int) -> int:
    """Batches of one pass over ``train``'s positive pairs (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return -(-train.n_interactions // batch_size)


def positive_pairs_dataset(train: Interactions, batch_size: int, seed: int = 0,
                           shuffle: bool = True, first_epoch: int = None) -> tf.data.Dataset:
    """Batches of ``(users, items)`` int32 index vectors covering every positive pair once.

    The last batch may be smaller. Cardinality is known, so Keras shows a full progress bar.
    ``first_epoch``: instead, every pass from this (0-based) epoch on, endlessly, each shuffled
    by ``(seed, epoch)`` (module docstring).
    """
    n_batches = batches_per_epoch(train, batch_size)
    users, items = train.pairs()
    n = len(users)
    if n == 0:
        raise ValueError(f"{train.name} has no interactions to train on")
    pairs = tf.constant(np.stack([users, items], axis=1), tf.int32)

    def one_pass(pass_seed):
        order = tf.range(n)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(
                order, seed=tf.stack([tf.cast(seed, tf.int64), pass_seed]))

        def batch(b):
            index = order[b * batch_size:tf.minimum((b + 1) * batch_size, n)]
            chosen = tf.gather(pairs, index)
            return chosen[:, 0], chosen[:, 1]

        return tf.data.Dataset.range(n_batches).map(batch)

    if first_epoch is None:
        passes = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        dataset = passes.flat_map(one_pass)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(n_batches))
    else:
        dataset = tf.data.Dataset.counter(int(first_epoch)).flat_map(one_pass)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def positive_keys(matrix) -> np.ndarray:
    """Sorted int64 keys ``user * n_items + item`` of a CSR matrix's entries.

    A sampled (user, item) is a known positive iff its key is found by binary search here; this
    is what the model keeps on device to reject sampled negatives.
    """
    n_items = matrix.shape[1]
    users = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = users * n_items + matrix.indices.astype(np.int64)
    return np.sort(keys)  # CSR with sorted indices is already sorted; sort guards other input
