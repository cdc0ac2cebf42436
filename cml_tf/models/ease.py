"""EASE (Steck, WWW 2019): the closed-form item-item model, in the same Keras interface as the zoo.

With X the binary users x items training matrix and lambda > 0, EASE's item-item weights are

    B = argmin ||X - X B||_F^2 + lambda ||B||_F^2   subject to diag(B) = 0,

whose solution is, with P = (X^T X + lambda I)^{-1},

    B_ij = -P_ij / P_jj  (i != j),   B_jj = 0,

and a user's scores are ``X_u B`` (the sum of the rows of B of the user's items). At the optimum
the objective equals sum_j (1 / P_jj - lambda), which is what ``loss`` reports (per training
pair).

Two ways to P, chosen by their cost (``solver="auto"``):

* ``"direct"``: invert the J x J matrix X^T X + lambda I: O(J^3).
* ``"woodbury"``: with n users and X^T X = (X^T)(X), P = (I - X^T K X) / lambda with the n x n
  K = (X X^T + lambda I)^{-1} (Woodbury's identity), so

      B_ij = Q_ij / (1 - Q_jj)  (i != j),   Q = X^T K X,

  O(n^3 + nnz (n + J)) with the sparse products; far cheaper when there are fewer users than
  items (citeulike-t: 7,947 users, 25,975 items).

B is written into the model's weight a block of rows at a time, so the solve's peak memory is
about 3 J^2 float32 for the direct path and J^2 + n J + 2 n^2 for Woodbury's (plus blocks).
Above ``max_items`` items the model refuses to be built and says how much it would need. The
default, 20,000, keeps B at 1.5 GiB (citeulike-t's 25,975 items: 2.5 GiB); every checkpoint and
the export hold it again, and a direct solve of that size takes minutes on two CPU cores.

Keras interface (as WRMF): **one ``train_step`` = the solve**; the batch's content is ignored,
the model holds X. With ``train_and_evaluate`` give EASE a ``train.batch_size`` of at least the
number of training pairs and ``train.epochs = 1`` (the configs do); further epochs leave B as it
is. The optimizer given to ``compile`` is unused.

Export (``metric = "dot_product"``): user vectors are the rows X_u of the training matrix and
item vectors the columns of B, so ``u . v_j = (X_u B)_j`` is EASE's score. Item-based queries
(``similar_items``, ``recommend_for_items``) use the item's unit vector e_i as its query
(``item_queries = "one_hot"``: an anonymous user who liked only item i), so a list of items
scores ``mean_i B_ij``, the EASE score of that user up to a positive factor.
"""

import numpy as np
import tensorflow as tf

from cml_tf.layers.feature_prior import SparseRows
from cml_tf.models.ranking import check_k, check_positive, mask_themselves
from cml_tf.models.sampled import RankingModel, csr_rows, interaction_matrix

SOLVERS = ("auto", "direct", "woodbury")
DEFAULT_MAX_ITEMS = 20_000


def solver_for(n_users: int, n_items: int, nnz: int, solver: str = "auto") -> str:
    """The cheaper of the two solves by their operation counts (module docstring)."""
    if solver != "auto":
        return solver
    direct = float(n_items) ** 3
    woodbury = float(n_users) ** 3 + nnz * float(n_users + n_items)
    return "woodbury" if woodbury < direct else "direct"


def solve_bytes(n_users: int, n_items: int, solver: str) -> int:
    """About the peak memory of a solve (float32), B included."""
    if solver == "woodbury":
        return 4 * (n_items ** 2 + n_users * n_items + 2 * n_users ** 2)
    return 4 * 3 * n_items ** 2


def ease_weights(indptr, indices, n_users: int, n_items: int, regularization: float,
                 out: tf.Variable, solver: str = "direct", block: int = 1024):
    """Writes EASE's B for the binary CSR matrix (``indptr``, ``indices``) into ``out`` [J, J];
    returns the objective sum_j (1 / P_jj - lambda) (float32 scalar).

    Every product with X is a sparse-dense product over its non-zeros; dense intermediates of
    X's size are built ``block`` rows or columns at a time, and B is written into ``out`` a block
    of rows at a time in place (``scatter_update``: a dense read or slice assignment of a
    variable that sparse ops touched copies all of it).
    """
    indptr = tf.cast(indptr, tf.int64)
    rows = tf.ragged.row_splits_to_segment_ids(indptr)
    cols = tf.cast(indices, tf.int64)
    x = tf.SparseTensor(tf.stack([rows, cols], axis=1), tf.ones_like(cols, tf.float32),
                        [n_users, n_items])
    lam = tf.constant(regularization, tf.float32)

    def write(start, values):
        stop = min(start + block, n_items)
        out.scatter_update(tf.IndexedSlices(_zero_diagonal(values, start),
                                            tf.range(start, stop)))

    if solver == "direct":
        gram = tf.concat([  # X^T X [J, J], a block of item columns at a time
            tf.sparse.sparse_dense_matmul(
                x, tf.sparse.to_dense(tf.sparse.slice(x, [0, start], [n_users, block])),
                adjoint_a=True)
            for start in range(0, n_items, block)], axis=1)
        gram = tf.linalg.set_diag(gram, tf.linalg.diag_part(gram) + lam)
        p = tf.linalg.inv(gram)
        del gram
        p_diag = tf.linalg.diag_part(p)
        for start in range(0, n_items, block):
            write(start, -p[start:start + block] / p_diag[None, :])
        return tf.reduce_sum(1.0 / p_diag - lam)
    small = tf.concat([  # X X^T [n, n], a block of users at a time
        tf.sparse.sparse_dense_matmul(
            x, tf.sparse.to_dense(tf.sparse.slice(x, [start, 0], [block, n_items])),
            adjoint_b=True)
        for start in range(0, n_users, block)], axis=1)
    k = tf.linalg.inv(tf.linalg.set_diag(small, tf.linalg.diag_part(small) + lam))
    del small
    m = tf.sparse.sparse_dense_matmul(x, k, adjoint_a=True)                  # X^T K [J, n]
    del k
    q_diag = tf.math.unsorted_segment_sum(                                   # (X^T K X)_jj
        tf.gather_nd(m, tf.stack([cols, rows], axis=1)), cols, n_items)
    rest = 1.0 - q_diag                                                      # lambda P_jj
    for start in range(0, n_items, block):
        write(start, tf.transpose(tf.sparse.sparse_dense_matmul(              # rows of Q
            x, m[start:start + block], adjoint_a=True, adjoint_b=True)) / rest[None, :])
    return tf.reduce_sum(lam / rest - lam)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MB"


def _zero_diagonal(block, start: int):
    """``block`` (rows start.. of a J x J matrix) with its entries on the diagonal set to 0."""
    n = tf.shape(block)[0]
    diagonal = tf.stack([tf.range(n, dtype=tf.int64), start + tf.range(n, dtype=tf.int64)], 1)
    return tf.tensor_scatter_nd_update(block, diagonal, tf.zeros([n], block.dtype))


@tf.keras.utils.register_keras_serializable("cml_tf")
class EASE(RankingModel):
    """EASE as a Keras model (module docstring); ``model.fit`` solves it in one step.

    Args:
      n_users, n_items: table sizes.
      regularization: lambda (> 0).
      max_items: refuse to build the model for more items than this (module docstring).
      solver: ``"auto"``, ``"direct"`` or ``"woodbury"``.
      known_positives: (n_users x n_items) training matrix X (binarised). Required to train.
      seed, jit_sampling: accepted for interface compatibility (EASE has no randomness and
        samples nothing).
      n_known: number of non-zeros of X; only ``from_config`` uses it.
    """

    metric = "dot_product"
    item_queries = "one_hot"  # the export queries with e_i for an item (module docstring)

    def __init__(self, n_users: int, n_items: int, regularization: float = 500.0,
                 max_items: int = DEFAULT_MAX_ITEMS, solver: str = "auto", known_positives=None,
                 seed: int = 0, jit_sampling: bool = True, n_known: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_positive(n_users=n_users, n_items=n_items, regularization=regularization,
                       max_items=max_items)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.regularization, self.max_items = float(regularization), int(max_items)
        self.solver, self.seed, self.jit_sampling = solver, seed, bool(jit_sampling)
        if known_positives is not None:
            known_positives = interaction_matrix(known_positives, n_users, n_items)
            known_positives.data[:] = 1.0
            n_known = known_positives.nnz
        self.n_known = int(n_known)
        chosen = solver_for(self.n_users, self.n_items, self.n_known, solver)
        if self.n_items > self.max_items:
            raise ValueError(
                f"EASE: {self.n_items:,} items is more than model.max_items="
                f"{self.max_items:,}; its item-item matrix alone takes "
                f"{_size(4 * self.n_items ** 2)} and the {chosen} solve about "
                f"{_size(solve_bytes(self.n_users, self.n_items, chosen))} (checkpoints and the "
                "export hold the matrix again); raise model.max_items to train it")
        self.item_item = self.add_weight(name="item_item", shape=(self.n_items, self.n_items),
                                         trainable=False, initializer="zeros")
        self.user_items = SparseRows((self.n_users, self.n_items), self.n_known,
                                     name="user_items")
        if known_positives is not None:
            self.user_items.assign(known_positives)
        self.solved = self.add_weight(name="solved", shape=(), dtype=tf.int64, trainable=False,
                                      initializer="zeros")
        self.objective = self.add_weight(name="objective", shape=(), trainable=False,
                                         initializer="zeros")
        self._trackers = {"loss": tf.keras.metrics.Mean("loss")}
        self.built = True

    @classmethod
    def from_interactions(cls, train, use_features: bool = True, **hyperparameters) -> "EASE":
        """A model sized for ``train`` (an Interactions) holding its interaction matrix."""
        del use_features  # pure collaborative filtering
        return cls(train.n_users, train.n_items, known_positives=train.matrix, **hyperparameters)

    # ---- training ------------------------------------------------------------------------------

    @property
    def solver_used(self) -> str:
        return solver_for(self.n_users, self.n_items, self.n_known, self.solver)

    def solve(self):
        """Computes B (module docstring); returns the objective per training pair."""
        if self.n_known == 0:
            raise ValueError("EASE needs the training interactions: build it with "
                             "known_positives=train.matrix or EASE.from_interactions(train)")
        csr = self.user_items
        objective = ease_weights(csr.indptr, csr.indices, self.n_users, self.n_items,
                                 self.regularization, self.item_item, self.solver_used)
        self.objective.assign(objective / self.n_known)
        self.solved.assign(1)
        return self.objective

    @property
    def metrics(self):
        return list(self._trackers.values())

    def make_train_function(self, force=False):
        """The solve runs eagerly (Python loops over row blocks of B, large dense ops), once;
        later epochs only report the objective."""
        def train_function(iterator):
            del iterator  # one step = the solve over the held matrix
            loss = self.solve() if not int(self.solved.numpy()) else self.objective
            self._trackers["loss"].update_state(loss)
            return {"loss": self._trackers["loss"].result()}
        self.train_function = train_function
        return train_function

    # ---- scoring -------------------------------------------------------------------------------

    def score(self, users):
        """X_u B for ``users`` (indices): [B, J], the sum of B's rows of each user's items.

        Gathers B's rows (a dense read of B would copy all of it, see :func:`ease_weights`),
        at most about 2^24 values at a time."""
        items = self.known_items(tf.reshape(users, [-1]))
        owners, flat = items.value_rowids(), items.flat_values
        n = tf.shape(owners, out_type=tf.int64)[0]
        chunk = max(1, (1 << 24) // self.n_items)
        scores = tf.zeros(tf.stack([items.nrows(), self.n_items]))

        def add(start, scores):
            stop = tf.minimum(start + chunk, n)
            rows = tf.gather(self.item_item, flat[start:stop])
            return start + chunk, scores + tf.math.unsorted_segment_sum(
                rows, owners[start:stop], items.nrows())

        _, scores = tf.while_loop(lambda start, _: start < n, add,
                                  (tf.constant(0, tf.int64), scores))
        return scores

    def similar_items(self, items, k: int):
        """The k items with the largest B_ij for each item i of ``items`` (itself excluded)."""
        check_k(k, self.n_items - 1)
        items = tf.reshape(items, [-1])
        return tf.math.top_k(mask_themselves(tf.gather(self.item_item, items), items), k)

    def user_vectors_for(self, users, training=False):
        """X_u, the users' rows of the training matrix, dense: [B, J]."""
        items = self.known_items(tf.reshape(users, [-1]))
        indices = tf.stack([items.value_rowids(), tf.cast(items.flat_values, tf.int64)], 1)
        return tf.scatter_nd(indices, tf.ones(tf.shape(indices)[:1]),
                             tf.stack([items.nrows(), self.n_items]))

    def all_item_vectors(self):
        """Row j = column j of B (one dense copy of B)."""
        return tf.transpose(self.item_item)

    @property
    def item_vectors(self) -> np.ndarray:
        """B^T as float32 numpy (the export's item vectors), written a block of B's rows at a
        time: one copy of B, where ``all_item_vectors().numpy()`` holds two at once."""
        out = np.empty((self.n_items, self.n_items), np.float32)
        step = max(1, (1 << 24) // self.n_items)
        for start in range(0, self.n_items, step):
            stop = min(start + step, self.n_items)
            out[:, start:stop] = tf.gather(self.item_item, tf.range(start, stop)).numpy().T
        return out

    def known_items(self, users):
        return csr_rows(self.user_items, users)

    def get_config(self):
        return {"n_users": self.n_users, "n_items": self.n_items,
                "regularization": self.regularization, "max_items": self.max_items,
                "solver": self.solver, "seed": self.seed, "jit_sampling": self.jit_sampling,
                "n_known": self.n_known, "name": self.name}

