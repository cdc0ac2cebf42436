"""Shared machinery of the zoo's sampled pairwise models: BPR / WARP / FM / VBPR / CDL.

It follows :class:`~cml_tf.models.cml.CML`'s training step, with the same sampler, rank weight
and scoring code; CML keeps its own ``train_step`` (it censors and has the feature prior).

:class:`SampledPairwiseModel` is a ``keras.Model`` whose ``train_step`` does, on a batch of N
positive pairs (i, j), on device:

1. sample U negatives k per pair uniformly over the items, redrawing known positives of user i
   (:class:`~cml_tf.layers.sampler.NegativeSampler`, a Bloom filter: no positive survives);
2. score all of them without gradient under the model's ``metric`` (``"squared_l2"``: minus the
   squared distance; ``"dot_product"``: the inner product) and keep the hardest (highest score):
   one fused XLA computation when ``jit_sampling`` is on and the item vectors are table rows;
3. under a tape, compute the user, positive and hardest-negative vectors only (so gradients are
   sparse ``IndexedSlices`` over the touched rows), their scores, and the model's loss from
   ``(positive_scores [N], negative_scores [N, U])``, where ``negative_scores`` equals the sampled
   scores in value and only its hardest column carries gradient;
4. apply the optimizer.

Scores are always "higher is better" (:func:`cml_tf.layers.retrieval.score_matrix` and
``score_pairs`` compute them), so one rank weight (:func:`cml_tf.layers.warp.warp_hinge`) serves
distances and dot products alike.

A subclass provides:

* ``user_vectors_for(users, training)`` and ``item_vectors_for(items, training)``: the vectors that
  are compared (differentiable; a gather from a table for plain embeddings, a feature MLP for
  hybrids). ``sampling_vectors(users, negatives)`` may override how the U negatives per pair are
  embedded for scoring (hybrids embed each distinct item once) and ``jit_compatible`` says whether
  that can run under XLA.
* ``pairwise_loss(batch) -> (parts, diagnostics)``: ``parts`` an ordered dict of weighted loss
  terms whose sum is minimised (each logged per positive pair), ``diagnostics`` other per-step
  scalars to log (e.g. the impostor fraction). Names must be declared with ``_init_trackers``.

Everything else -- ``score``, ``recommend``, ``similar_items``, ``known_items``, ``user_vectors`` /
``item_vectors`` (what the SavedModel export reads) and the Keras metric trackers -- is here.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from cml_tf.layers.retrieval import score_matrix, score_pairs
from cml_tf.layers.sampler import NegativeSampler
from cml_tf.layers.warp import warp_hinge
from cml_tf.models.fitting import OneIteratorFit
from cml_tf.models.ranking import TopK, check_k, check_positive, mask_themselves


METRICS = ("squared_l2", "dot_product")


@dataclasses.dataclass
class PairBatch:
    """One training step's tensors, handed to ``pairwise_loss``.

    ``negative_scores`` [N, U] equals the scores of the sampled negatives in value (no gradient);
    its ``hardest`` column carries the gradient of ``hard_scores``.
    """

    users: tf.Tensor            # [N] int32
    positives: tf.Tensor        # [N] int32
    negatives: tf.Tensor        # [N, U] int32, sampled
    hardest: tf.Tensor          # [N] int32, column of the hardest negative
    hard_items: tf.Tensor       # [N] int32
    u: tf.Tensor                # [N, D] user vectors
    v_pos: tf.Tensor            # [N, D] positive item vectors
    v_hard: tf.Tensor           # [N, D] hardest negative item vectors
    positive_scores: tf.Tensor  # [N]
    hard_scores: tf.Tensor      # [N]
    negative_scores: tf.Tensor  # [N, U]


class RankingModel(OneIteratorFit, TopK, tf.keras.Model):
    """What every model of the zoo answers with, by ``metric``: ``score``, ``recommend``,
    ``similar_items`` and the ``user_vectors`` / ``item_vectors`` the export reads.

    A subclass provides ``user_vectors_for(users, training)``, ``all_item_vectors()`` (and may
    override ``all_user_vectors()``) and ``known_items(users)``; ``n_users``, ``n_items``.
    """

    metric = "squared_l2"  # "squared_l2" | "dot_product": how users and items are compared

    def user_vectors_for(self, users, training=False):
        """[N, D] vectors of ``users`` (indices)."""
        raise NotImplementedError

    def all_user_vectors(self):
        """[n_users, D]: every user's vector (inference mode)."""
        return self.user_vectors_for(tf.range(self.n_users), training=False)

    def all_item_vectors(self):
        """[n_items, D]: every item's vector (inference mode)."""
        raise NotImplementedError

    def known_items(self, users):
        """Known positives of ``users`` as a RaggedTensor of item indices."""
        raise NotImplementedError

    def call(self, users, training=None):
        return self.score(users)

    def score(self, users):
        """Scores of every item for ``users`` (indices): [B, J], higher is better."""
        u = self.user_vectors_for(tf.reshape(users, [-1]), training=False)
        return score_matrix(u, self.all_item_vectors(), self.metric)

    def similar_items(self, items, k: int):
        """The k best items for each item of ``items`` under ``metric`` (itself excluded)."""
        check_k(k, self.n_items - 1)
        items = tf.reshape(items, [-1])
        table = self.all_item_vectors()
        scores = score_matrix(tf.gather(table, items), table, self.metric)
        scores = mask_themselves(scores, items)
        return tf.math.top_k(scores, k)

    @property
    def user_vectors(self) -> np.ndarray:
        """[n_users, D] float32, what the export compares under ``metric``."""
        return self.all_user_vectors().numpy()

    @property
    def item_vectors(self) -> np.ndarray:
        """[n_items, D] float32, what the export compares under ``metric``."""
        return self.all_item_vectors().numpy()


class SampledPairwiseModel(RankingModel):
    """Base of the models trained on sampled (user, positive, negatives) triples.

    Args:
      n_users, n_items: table sizes.
      num_negatives: U, negatives sampled per positive pair.
      known_positives: (n_users x n_items) matrix of the training positives, never sampled as
        negatives and excluded by ``recommend``. Required to train.
      seed: seeds the negative sampler (subclasses also seed their initialisers with it).
      jit_sampling: compile the negative sampling and scoring with XLA (when
        ``jit_compatible``).
      n_known: number of known positives; only ``from_config`` uses it (to size the sampler
        before its weights are loaded).
    """

    jit_compatible = True  # False when sampling_vectors cannot run under XLA (sparse features)

    def __init__(self, n_users: int, n_items: int, num_negatives: int = 20,
                 known_positives=None, seed: int = 0, jit_sampling: bool = True,
                 n_known: int = 0, **kwargs):
        super().__init__(**kwargs)
        check_positive(n_users=n_users, n_items=n_items, num_negatives=num_negatives)
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.num_negatives, self.seed = int(num_negatives), seed
        self.sampler = NegativeSampler.for_model(n_users, n_items, known_positives, n_known,
                                                 seed=seed, name="sampler")
        self.jit_sampling = bool(jit_sampling)
        self._sampling_function = None
        self._trackers = {}

    def _init_trackers(self, names):
        """Creates the Keras Mean trackers (call at the end of a subclass's ``__init__``)."""
        self._trackers = {name: tf.keras.metrics.Mean(name) for name in names}

    # ---- hooks -----------------------------------------------------------------------------

    def user_vectors_for(self, users, training=False):
        """[N, D] vectors of ``users`` (indices)."""
        raise NotImplementedError

    def item_vectors_for(self, items, training=False):
        """[N, D] vectors of ``items`` (indices)."""
        raise NotImplementedError

    def sampling_vectors(self, users, negatives):
        """(``[N, D]`` users, ``[N, U, D]`` negatives) to score the samples, without dropout."""
        flat = tf.reshape(negatives, [-1])
        items = self.item_vectors_for(flat, training=False)
        return (self.user_vectors_for(users, training=False),
                tf.reshape(items, tf.concat([tf.shape(negatives), tf.shape(items)[-1:]], 0)))

    def pairwise_loss(self, batch: PairBatch):
        """``(parts, diagnostics)``: ordered dicts of scalar tensors (see the module doc)."""
        raise NotImplementedError

    def all_item_vectors(self):
        """[n_items, D]: every item's vector (inference mode)."""
        return self.item_vectors_for(tf.range(self.n_items), training=False)

    # ---- training ------------------------------------------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers.values())

    def pair_scores(self, queries, candidates):
        """Row-wise scores under ``metric`` (broadcasting over leading dimensions)."""
        return score_pairs(queries, candidates, self.metric)

    def train_step(self, data):
        if self.sampler.n_known == 0:
            raise ValueError(f"{type(self).__name__} needs the training positives to sample "
                             "negatives: build it with known_positives=train.matrix or "
                             "from_interactions(train)")
        users, positives = tf.reshape(data[0], [-1]), tf.reshape(data[1], [-1])
        negatives, sampled_scores, hardest = self._sample_negatives(users)
        hard_items = tf.gather(negatives, hardest, batch_dims=1)

        with tf.GradientTape() as tape:
            u = self.user_vectors_for(users, training=True)
            v_pos = self.item_vectors_for(positives, training=True)
            v_hard = self.item_vectors_for(hard_items, training=True)
            s_pos = self.pair_scores(u, v_pos)
            s_hard = self.pair_scores(u, v_hard)
            # Equal to all U sampled scores in value; only the hardest one carries gradient.
            s_all = tf.stop_gradient(sampled_scores) + tf.one_hot(
                hardest, self.num_negatives) * (s_hard - tf.stop_gradient(s_hard))[:, None]
            batch = PairBatch(users, positives, negatives, hardest, hard_items, u, v_pos, v_hard,
                              s_pos, s_hard, s_all)
            parts, diagnostics = self.pairwise_loss(batch)
            total = None
            for value in parts.values():
                total = value if total is None else total + value

        variables = self.trainable_variables
        gradients = tape.gradient(total, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))

        n = tf.cast(tf.size(users), tf.float32)
        # Per positive pair; the parts are weighted, so loss = the sum of the parts.
        logs = {"loss": total / n, **{name: value / n for name, value in parts.items()},
                **diagnostics}
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in logs}

    def _sample_negatives(self, users):
        """U negatives per user, their scores (no gradient) and the hardest's column."""
        if self._sampling_function is None:
            def sample(users):
                # The sampler's redraw loop trips on a static U of 1: draw 2 i.i.d. columns and
                # keep the first (the same distribution).
                negatives, valid = self.sampler(users, max(self.num_negatives, 2))
                negatives = negatives[:, :self.num_negatives]
                valid = valid[:, :self.num_negatives]
                anchor, sampled = self.sampling_vectors(users, negatives)
                scores = self.pair_scores(anchor[:, None, :], sampled)
                scores = tf.where(valid, scores, -np.inf)
                return negatives, scores, tf.argmax(scores, axis=1, output_type=tf.int32)

            self._sampling_function = tf.function(
                sample, jit_compile=self.jit_sampling and self.jit_compatible)
        return self._sampling_function(users)

    # ---- scoring -------------------------------------------------------------------------------

    def known_items(self, users):
        """Known positives of ``users`` as a RaggedTensor of item indices."""
        return self.sampler.known_items(users)

    def get_config(self):
        return {"n_users": self.n_users, "n_items": self.n_items,
                "num_negatives": self.num_negatives, "seed": self.seed,
                "jit_sampling": self.jit_sampling, "n_known": self.sampler.n_known,
                "name": self.name}


# ---- models that hold their interaction matrix (WRMF, EASE) ------------------------------------


def interaction_matrix(matrix, n_users: int, n_items: int) -> sp.csr_matrix:
    """``matrix`` as float32 CSR with duplicates summed and explicit zeros dropped, or
    ValueError when it is not (n_users x n_items)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if matrix.shape != (n_users, n_items):
        raise ValueError(f"known_positives has shape {matrix.shape}, expected "
                         f"({n_users}, {n_items})")
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def csr_rows(csr, rows) -> tf.RaggedTensor:
    """The column indices of ``rows`` of a :class:`~cml_tf.layers.feature_prior.SparseRows`
    matrix, as a RaggedTensor (one row per requested row)."""
    rows = tf.cast(tf.reshape(rows, [-1]), tf.int64)
    positions = tf.ragged.range(tf.gather(csr.indptr, rows), tf.gather(csr.indptr, rows + 1))
    return tf.RaggedTensor.from_row_splits(tf.gather(csr.indices, positions.flat_values),
                                           positions.row_splits)


# ---- losses on scores (higher is better) -------------------------------------------------------


def warp_loss(batch: PairBatch, margin: float, n_items: int):
    """WARP hinge on the hardest sampled negative: ``(sum over pairs, impostors, weight)``."""
    pair_loss, impostors, weight = warp_hinge(batch.positive_scores, batch.negative_scores,
                                              margin, n_items)
    return tf.reduce_sum(pair_loss), impostors, weight


def bpr_loss(batch: PairBatch):
    """``sum -log sigmoid(s_pos - s_hard)`` (with U = 1: BPR's uniformly sampled negative)."""
    return tf.reduce_sum(tf.math.softplus(batch.hard_scores - batch.positive_scores))
