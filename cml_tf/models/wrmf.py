"""WRMF: weighted regularised matrix factorisation for implicit feedback (Hu et al., Pan et al.),
trained by alternating least squares in TensorFlow, inside the same Keras interface.

With preferences p_ui = [r_ui > 0] and confidences c_ui = 1 + alpha r_ui over *all* user-item
pairs (no sampling), minimise

    sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + lambda (sum_u ||x_u||^2 + sum_i ||y_i||^2).

With Y fixed, every user's row has the closed form

    x_u = (Y^T Y + sum_{i in u} (c_ui - 1) y_i y_i^T + lambda I)^{-1} sum_{i in u} c_ui y_i

(only the user's own items enter beside the shared Y^T Y), and symmetrically for the items.
:func:`als_solve` computes all rows at once, exactly (``"exact"``: Cholesky per row, in blocks)
or by ``cg_steps`` conjugate-gradient steps warm-started at the current rows (``"cg"``, what
``implicit`` does, default 3 steps) with matrix-free products over the non-zeros.

Keras interface: **one ``train_step`` = one full sweep** (users, then items); the batch's content
is ignored, the model holds the confidence matrix. With ``train_and_evaluate`` give WRMF a
``train.batch_size`` at least the number of training pairs so one epoch = one sweep (the
citeulike-t config does); ``train.epochs`` is then the number of ALS iterations, and the
optimizer that ``compile`` is given is unused. ``score``, ``recommend``, ``user_vectors`` /
``item_vectors`` (``metric = "dot_product"``) are those of every model of the zoo.

``implicit``'s ``AlternatingLeastSquares`` scales the matrix by alpha and uses c_ui = alpha r_ui
as the confidence of an observed pair; here c_ui = 1 + alpha r_ui (Hu et al.'s form). For binary
data the two differ by 1 in 41 at alpha = 40.
"""

import numpy as np
import tensorflow as tf

from cml_tf.layers.feature_prior import SparseRows
from cml_tf.models.ranking import check_non_negative, check_positive
from cml_tf.models.sampled import RankingModel, csr_rows, interaction_matrix

SOLVERS = ("cg", "exact")


def als_solve(fixed, indptr, indices, values, alpha, regularization, current=None,
              solver: str = "cg", cg_steps: int = 3, n_rows: int = None, block_rows: int = 256):
    """The ALS solution of every row against the fixed factors (module docstring formula).

    Args:
      fixed: [n_cols, d] the other side's factors (Y when solving users).
      indptr, indices, values: the rows x cols CSR matrix of observations r (int64, int64,
        float32); c = 1 + alpha r.
      alpha, regularization: the confidence scale and lambda.
      current: [n_rows, d] the current rows (CG's starting point; zeros when None).
      solver: ``"cg"`` or ``"exact"``.
      cg_steps: conjugate-gradient steps (``"cg"``).
      n_rows: number of rows (static; default len(indptr) - 1 when known statically).
      block_rows: rows per batched Cholesky solve (``"exact"``).
    Returns:
      [n_rows, d] float32.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    fixed = tf.convert_to_tensor(fixed, tf.float32)
    indptr = tf.cast(indptr, tf.int64)
    n_rows = int(indptr.shape[0]) - 1 if n_rows is None else int(n_rows)
    d = fixed.shape[-1]
    rows = tf.ragged.row_splits_to_segment_ids(indptr)
    cols = tf.cast(indices, tf.int64)
    weight = alpha * tf.cast(values, tf.float32)          # c - 1
    gathered = tf.gather(fixed, cols)                      # [nnz, d]
    gram = tf.matmul(fixed, fixed, transpose_a=True) + regularization * tf.eye(d)
    rhs = tf.math.unsorted_segment_sum((1.0 + weight)[:, None] * gathered, rows, n_rows)

    if solver == "exact":
        return _solve_exact(gathered, weight, indptr, gram, rhs, n_rows, block_rows)

    def product(p):  # A p for every row at once, without forming A
        along = weight * tf.reduce_sum(gathered * tf.gather(p, rows), axis=1)
        return tf.matmul(p, gram) + tf.math.unsorted_segment_sum(
            along[:, None] * gathered, rows, n_rows)

    x = tf.zeros([n_rows, d]) if current is None else tf.convert_to_tensor(current, tf.float32)
    r = rhs - product(x)
    p = r
    rs = tf.reduce_sum(r * r, axis=1)
    for _ in range(cg_steps):
        active = rs > 1e-20
        ap = product(p)
        step = tf.where(active, tf.math.divide_no_nan(rs, tf.reduce_sum(p * ap, axis=1)), 0.0)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = tf.reduce_sum(r * r, axis=1)
        p = r + tf.where(active, tf.math.divide_no_nan(rs_new, rs), 0.0)[:, None] * p
        rs = tf.where(active, rs_new, rs)
    return x


def _solve_exact(gathered, weight, indptr, gram, rhs, n_rows, block_rows):
    """Cholesky solves of A_u = gram + sum_i (c_ui - 1) y_i y_i^T, ``block_rows`` rows at once
    (each block pads its rows' items to the longest row of the block)."""
    scaled = tf.sqrt(weight)[:, None] * gathered
    blocks = []
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        splits = indptr[start:stop + 1]
        ragged = tf.RaggedTensor.from_row_splits(scaled[splits[0]:splits[-1]],
                                                 splits - splits[0])
        padded = ragged.to_tensor()                                   # [B, L, d]
        a = gram[None] + tf.matmul(padded, padded, transpose_a=True)  # [B, d, d]
        blocks.append(tf.linalg.cholesky_solve(tf.linalg.cholesky(a),
                                               rhs[start:stop, :, None])[:, :, 0])
    return tf.concat(blocks, axis=0)


@tf.keras.utils.register_keras_serializable("cml_tf")
class WRMF(RankingModel):
    """Implicit-feedback MF by ALS (module docstring); ``model.fit`` runs one sweep per step.

    Args:
      n_users, n_items: table sizes.
      dim: number of factors.
      alpha: confidence scale, c = 1 + alpha r.
      regularization: lambda.
      solver: ``"cg"`` (conjugate gradient, warm-started) or ``"exact"`` (Cholesky).
      cg_steps: CG steps per half-sweep.
      init_scale: factors start uniform in [0, init_scale) (``implicit``'s initialisation).
      known_positives: (n_users x n_items) matrix r of the training interactions (its values are
        the r of the confidence). Required to train.
      seed: seeds the initialisation.
      jit_sampling: accepted for interface compatibility (WRMF does not sample).
      n_known: number of non-zeros; only ``from_config`` uses it.
    """

    metric = "dot_product"

    def __init__(self, n_users: int, n_items: int, dim: int = 100, alpha: float = 40.0,
                 regularization: float = 0.01, solver: str = "cg", cg_steps: int = 3,
                 init_scale: float = 0.01, known_positives=None, seed: int = 0,
                 jit_sampling: bool = True, n_known: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_positive(n_users=n_users, n_items=n_items, dim=dim, init_scale=init_scale)
        check_non_negative(alpha=alpha, regularization=regularization)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if cg_steps < 1:
            raise ValueError(f"cg_steps must be >= 1, got {cg_steps}")
        self.n_users, self.n_items, self.dim = int(n_users), int(n_items), int(dim)
        self.alpha, self.regularization = float(alpha), float(regularization)
        self.solver, self.cg_steps = solver, int(cg_steps)
        self.init_scale, self.seed, self.jit_sampling = float(init_scale), seed, bool(jit_sampling)
        rng = np.random.default_rng(seed)
        scale = self.init_scale
        self.user_factors = self.add_weight(
            name="user_factors", shape=(self.n_users, self.dim), trainable=False,
            initializer=tf.keras.initializers.Constant(
                rng.random((self.n_users, self.dim), np.float32) * scale))
        self.item_factors = self.add_weight(
            name="item_factors", shape=(self.n_items, self.dim), trainable=False,
            initializer=tf.keras.initializers.Constant(
                rng.random((self.n_items, self.dim), np.float32) * scale))
        if known_positives is not None:
            known_positives = interaction_matrix(known_positives, n_users, n_items)
            n_known = known_positives.nnz
        self.n_known = int(n_known)
        self.user_items = SparseRows((self.n_users, self.n_items), self.n_known,
                                     name="user_items")
        self.item_users = SparseRows((self.n_items, self.n_users), self.n_known,
                                     name="item_users")
        if known_positives is not None:
            self.user_items.assign(known_positives)
            self.item_users.assign(known_positives.T.tocsr())
        self.sweeps = self.add_weight(name="sweeps", shape=(), dtype=tf.int64, trainable=False,
                                      initializer="zeros")
        self._trackers = {name: tf.keras.metrics.Mean(name) for name in ("loss",)}
        self.built = True

    @classmethod
    def from_interactions(cls, train, use_features: bool = True, **hyperparameters) -> "WRMF":
        """A model sized for ``train`` (an Interactions) holding its interaction matrix."""
        del use_features  # pure collaborative filtering
        return cls(train.n_users, train.n_items, known_positives=train.matrix, **hyperparameters)

    # ---- training ------------------------------------------------------------------------------

    def _solve(self, csr: SparseRows, fixed, current, n_rows):
        return als_solve(fixed, csr.indptr, csr.indices, csr.values, self.alpha,
                         self.regularization, current=current, solver=self.solver,
                         cg_steps=self.cg_steps, n_rows=n_rows)

    def sweep(self):
        """One ALS iteration: every user row, then every item row. Returns the loss after it."""
        if self.n_known == 0:
            raise ValueError("WRMF needs the training interactions: build it with "
                             "known_positives=train.matrix or WRMF.from_interactions(train)")
        self.user_factors.assign(self._solve(self.user_items, self.item_factors,
                                             self.user_factors, self.n_users))
        self.item_factors.assign(self._solve(self.item_users, self.user_factors,
                                             self.item_factors, self.n_items))
        self.sweeps.assign_add(1)
        return self.objective()

    def objective(self):
        """The WRMF loss, per observed pair: all-pairs squared error by the Gram trick."""
        x, y = self.user_factors, self.item_factors
        everything = tf.reduce_sum(tf.matmul(x, x, transpose_a=True)
                                   * tf.matmul(y, y, transpose_a=True))  # sum_{u,i} (x.y)^2
        csr = self.user_items
        rows = tf.ragged.row_splits_to_segment_ids(csr.indptr)
        s = tf.reduce_sum(tf.gather(x, rows) * tf.gather(y, csr.indices), axis=1)
        c = 1.0 + self.alpha * csr.values
        observed = tf.reduce_sum(c * tf.square(1.0 - s) - tf.square(s))
        l2 = self.regularization * (tf.reduce_sum(tf.square(x)) + tf.reduce_sum(tf.square(y)))
        return (everything + observed + l2) / max(self.n_known, 1)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def train_step(self, data):
        del data  # one step = one full sweep over the held confidence matrix
        loss = self.sweep()
        self._trackers["loss"].update_state(loss)
        return {"loss": self._trackers["loss"].result()}

    # ---- scoring -------------------------------------------------------------------------------

    def user_vectors_for(self, users, training=False):
        return tf.gather(self.user_factors, tf.reshape(users, [-1]))

    def all_user_vectors(self):
        return tf.convert_to_tensor(self.user_factors)

    def all_item_vectors(self):
        return tf.convert_to_tensor(self.item_factors)

    def known_items(self, users):
        return csr_rows(self.user_items, users)

    def get_config(self):
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim,
                "alpha": self.alpha, "regularization": self.regularization,
                "solver": self.solver, "cg_steps": self.cg_steps, "init_scale": self.init_scale,
                "seed": self.seed, "jit_sampling": self.jit_sampling, "n_known": self.n_known,
                "name": self.name}
