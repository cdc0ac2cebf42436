"""Uniform negative sampling with known positives rejected on device.

Known positives are checked with a Bloom filter: a bitmap of ``2^b`` bits in which every known
(user, item) pair sets two bits chosen by two 32-bit hashes. A pair whose two bits are set *may*
be known; a pair with either bit clear is certainly not known. Every draw that may be known is
replaced, so **no known positive survives** (a Bloom filter has no false negatives); the price is
that a small random set of unknown pairs (the false-positive rate, below 0.1% with the default 64
bits per key) is never drawn. The check is two gathers from a small table and a few integer ops:
fast, static-shaped and XLA-compilable, unlike a binary search over the sorted keys, which is
kept for exact look-ups (:meth:`NegativeSampler.is_known`, ``known_items``).

Replacing a flagged draw: each row draws ``U + E`` items at once (``E`` spare columns) and keeps its
first ``U`` unflagged ones. The unflagged draws of an i.i.d. uniform sequence are i.i.d. uniform
over the unflagged items, so this is rejection sampling done in one pass. Only rows with more than
``E`` flagged draws go on to redraw rounds. One pass matters because on device every round costs
as much as the first or more: it hashes every draw of the batch, not just the flagged ones (on
CPU under XLA a round took several times as long as the first pass). So E is sized from the
data: a draw of user u is flagged with probability p_u (n_u / J for uniform draws, Q_u below for
the popularity proposal), the flagged count of a row is Binomial(U + E, p_u), and E is the
smallest number >= max(2, ceil(U / 4)) for which, averaged over the training pairs, at most
``REDRAW_RATE`` (1e-4) of the rows need a round (at most 4U). Sparse data keeps E = max(2,
ceil(U / 4)) (citeulike-t: 3 for U = 10); dense data gets more (the MovieLens-1M prefix: 7 for
U = 10, 15 with the popularity proposal at beta 1), instead of 2-8 rounds per step.

Proposals. ``proposal="uniform"`` (the paper's) draws every item with probability 1/J.
``proposal="popularity"`` draws item k with probability

    q(k) = (n_k + 1)^beta / sum_l (n_l + 1)^beta        (n_k: training positives of item k)

(the +1 keeps every item drawable, so an importance weight 1/q exists for each; beta = 0 is
uniform), by Walker's alias method: a column c uniform over the J items and a uniform u in [0, 1)
give c when u < prob[c], else alias[c]. That is two gathers per draw, whatever J, from two tables
of J entries built once (Vose's O(J) construction, :func:`alias_table`). Rejecting flagged draws
works for any i.i.d. proposal: the accepted draws are i.i.d. from q restricted to the items the
filter passes, q(k) / (1 - Q_u), where Q_u = sum of q over the user's known positives (stored per
user, :meth:`NegativeSampler.rank_factors`; the Bloom filter's false positives, under 0.1% of
the pairs, are ignored in Q_u).
"""

import functools
import math

import numpy as np
import scipy.sparse as sp
import scipy.stats
import tensorflow as tf

_MIX = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C)


def _hashes_np(users, items):
    u, i = users.astype(np.uint32), items.astype(np.uint32)
    out = []
    for a, b, c in (_MIX[:3], _MIX[3:]):
        h = u * np.uint32(a) + i * np.uint32(b)
        h ^= h >> np.uint32(15)
        h *= np.uint32(c)
        h ^= h >> np.uint32(13)
        out.append(h)
    return out


def _hashes_tf(users, items):
    u, i = tf.cast(users, tf.uint32), tf.cast(items, tf.uint32)
    shift = tf.bitwise.right_shift
    out = []
    for a, b, c in (_MIX[:3], _MIX[3:]):
        h = u * tf.constant(a, tf.uint32) + i * tf.constant(b, tf.uint32)
        h = tf.bitwise.bitwise_xor(h, shift(h, tf.constant(15, tf.uint32)))
        h = h * tf.constant(c, tf.uint32)
        h = tf.bitwise.bitwise_xor(h, shift(h, tf.constant(13, tf.uint32)))
        out.append(h)
    return out


def bloom_bits(n_keys: int, bits_per_key: int = 64) -> int:
    """log2 of the filter size: the next power of two >= bits_per_key * n_keys, in [10, 32]."""
    return int(min(32, max(10, math.ceil(math.log2(max(1, n_keys * bits_per_key))))))


PROPOSALS = ("uniform", "popularity")
REDRAW_RATE = 1e-4  # share of rows allowed to exhaust their spares (module docstring)


def popularity_proposal(item_counts, beta: float) -> np.ndarray:
    """q(k) = (n_k + 1)^beta / sum_l (n_l + 1)^beta (float64, sums to 1)."""
    weights = np.power(np.asarray(item_counts, np.float64) + 1.0, float(beta))
    return weights / weights.sum()


def alias_table(probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of a distribution over J outcomes (Vose's construction, O(J)):
    ``(prob float32 [J], alias int32 [J])`` such that drawing a column c uniformly and keeping c
    with probability prob[c], else alias[c], draws outcome k with the given probability."""
    p = np.asarray(probabilities, np.float64)
    n = len(p)
    scaled = p * n / p.sum()
    prob, alias = np.ones(n), np.arange(n)
    small = [int(k) for k in np.flatnonzero(scaled < 1.0)]
    large = [int(k) for k in np.flatnonzero(scaled >= 1.0)]
    while small and large:
        low, high = small.pop(), large.pop()
        prob[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    # What is left has probability 1 up to rounding: prob stays 1, alias itself.
    return prob.astype(np.float32), alias.astype(np.int32)


@tf.keras.utils.register_keras_serializable("cml_tf")
class NegativeSampler(tf.keras.layers.Layer):
    """Draws U items per user from the proposal over all J items, never a known positive.

    ``call(users, num_negatives)`` returns ``(items [N, U] int32, valid [N, U] bool)``. Draws that
    may be known (module docstring) are redrawn up to ``max_rounds`` times; one still flagged
    after that (only for users who liked a large share of all items) has ``valid`` False and
    callers must ignore it.

    ``proposal``: ``"uniform"`` or ``"popularity"`` (q(k) proportional to (n_k + 1)^``beta``,
    module docstring); ``n_users`` sizes the per-user known mass Q_u of the popularity proposal.

    Weights: the sorted int64 keys ``user * J + item`` of the known positives, and the Bloom
    filter's bitmap as int32 words; for the popularity proposal also q, its alias table and Q_u,
    all computed from the keys.
    """

    def __init__(self, n_items: int, n_known: int, max_rounds: int = 8, bits_per_key: int = 64,
                 seed=None, proposal: str = "uniform", beta: float = 1.0, n_users: int = 0,
                 **kwargs):
        super().__init__(**{**kwargs, "trainable": False})
        if proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.n_items, self.n_known = int(n_items), int(n_known)
        self.max_rounds, self.bits_per_key, self.seed = int(max_rounds), int(bits_per_key), seed
        self.proposal, self.beta, self.n_users = proposal, float(beta), int(n_users)
        self.log2_bits = bloom_bits(self.n_known, self.bits_per_key)
        self.keys = self.add_weight(name="known_keys", shape=(max(self.n_known, 1),),
                                    dtype=tf.int64, trainable=False,
                                    initializer=tf.keras.initializers.Constant(-1))
        self.filter = self.add_weight(name="bloom_filter", shape=(2 ** self.log2_bits // 32,),
                                      dtype=tf.int32, trainable=False, initializer="zeros")
        if proposal == "popularity":
            if self.n_users < 1:
                raise ValueError("the popularity proposal needs n_users (the size of Q_u)")
            table = functools.partial(self.add_weight, trainable=False)
            self.probability = table(name="proposal", shape=(self.n_items,), dtype=tf.float32,
                                     initializer=tf.keras.initializers.Constant(
                                         1.0 / self.n_items))
            self.alias_probability = table(name="alias_probability", shape=(self.n_items,),
                                           dtype=tf.float32, initializer="ones")
            self.alias = table(name="alias", shape=(self.n_items,), dtype=tf.int32,
                               initializer=_Range())
            self.known_mass = table(name="known_mass", shape=(self.n_users,), dtype=tf.float32,
                                    initializer="zeros")
        self._generator = (tf.random.Generator.from_seed(seed) if seed is not None
                           else tf.random.Generator.from_non_deterministic_state())
        self._rejection = None  # (p_u quantiles, weights) once the keys are known
        self._spares = {}

    @staticmethod
    def known_keys(matrix, n_items=None) -> np.ndarray:
        """Sorted keys ``user * n_items + item`` of the non-zeros of a users x items matrix.

        A sort and a comparison of neighbours: numpy 2's hash-based ``np.unique`` took 42 s
        for EchoNest's 4.4M training keys (a loaded machine; the sort, well under a second).
        """
        coo = sp.coo_matrix(matrix)
        n_items = coo.shape[1] if n_items is None else n_items
        keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col.astype(np.int64))
        return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys

    @classmethod
    def for_model(cls, n_users: int, n_items: int, known_positives=None, n_known: int = 0,
                  **kwargs) -> "NegativeSampler":
        """A model's sampler: filled from its (n_users x n_items) training positives, or empty
        with room for ``n_known`` keys (``from_config``, before the saved weights load)."""
        kwargs.setdefault("n_users", n_users)
        if known_positives is None:
            return cls(n_items, n_known, **kwargs)
        known_positives = sp.csr_matrix(known_positives)
        if known_positives.shape != (n_users, n_items):
            raise ValueError(f"known_positives has shape {known_positives.shape}, expected "
                             f"({n_users}, {n_items})")
        return cls.from_matrix(known_positives, **kwargs)

    @classmethod
    def from_matrix(cls, matrix, **kwargs) -> "NegativeSampler":
        keys = cls.known_keys(matrix)
        kwargs.setdefault("n_users", matrix.shape[0])
        layer = cls(matrix.shape[1], len(keys), **kwargs)
        layer.assign_keys(keys)
        return layer

    def assign_keys(self, keys: np.ndarray):
        """Stores the sorted keys and builds the Bloom filter from them."""
        keys = np.asarray(keys, np.int64)
        if len(keys) != self.n_known:
            raise ValueError(f"{len(keys)} keys for a sampler built for {self.n_known}")
        words = np.zeros(2 ** self.log2_bits // 32, np.uint32)
        for h in _hashes_np(keys // self.n_items, keys % self.n_items):
            bit = h >> np.uint32(32 - self.log2_bits)
            np.bitwise_or.at(words, bit >> np.uint32(5),
                             np.left_shift(np.uint32(1), bit & np.uint32(31)))
        self.filter.assign(words.view(np.int32))
        self.keys.assign(keys if len(keys) else np.array([-1], np.int64))
        if self.proposal == "popularity":
            items = keys % self.n_items
            q = popularity_proposal(np.bincount(items, minlength=self.n_items), self.beta)
            prob, alias = alias_table(q)
            self.probability.assign(q.astype(np.float32))
            self.alias_probability.assign(prob)
            self.alias.assign(alias)
            self.known_mass.assign(np.bincount(keys // self.n_items, weights=q[items],
                                               minlength=self.n_users).astype(np.float32))
        self._rejection = _rejection_profile(keys // self.n_items, self.n_items,
                                             q[items] if self.proposal == "popularity" else None)
        self._spares = {}

    def maybe_known(self, users, items):
        """True for every known (user, item) and for a few others (Bloom false positives)."""
        users = tf.broadcast_to(users, tf.shape(items)) if users.shape.rank < 2 else users
        found = None
        for h in _hashes_tf(users, items):
            bit = tf.cast(tf.bitwise.right_shift(h, tf.constant(32 - self.log2_bits, tf.uint32)),
                          tf.int32)
            word = tf.gather(self.filter, tf.bitwise.right_shift(bit, 5))
            set_ = tf.equal(tf.bitwise.bitwise_and(
                tf.bitwise.right_shift(word, tf.bitwise.bitwise_and(bit, 31)), 1), 1)
            found = set_ if found is None else tf.logical_and(found, set_)
        return found

    def is_known(self, users, items):
        """Exactly whether (user, item) is a known positive (binary search on the keys)."""
        query = tf.cast(users, tf.int64) * self.n_items + tf.cast(items, tf.int64)
        flat = tf.reshape(query, [-1])
        position = tf.minimum(tf.searchsorted(self.keys, flat), tf.size(self.keys) - 1)
        found = tf.equal(tf.gather(self.keys, position), flat)
        return tf.reshape(found, tf.shape(query))

    def known_items(self, users):
        """Known positives of ``users`` as a RaggedTensor of item indices (from the sorted keys)."""
        users = tf.cast(tf.reshape(users, [-1]), tf.int64)
        starts = tf.searchsorted(self.keys, users * self.n_items)
        limits = tf.searchsorted(self.keys, (users + 1) * self.n_items)
        positions = tf.ragged.range(starts, limits)
        return tf.RaggedTensor.from_row_splits(
            tf.gather(self.keys, positions.flat_values) % self.n_items, positions.row_splits)

    def uniform_items(self, shape):
        """Items drawn uniformly over all J (no rejection)."""
        return self._generator.uniform(shape, 0, self.n_items, dtype=tf.int32)

    def draw(self, shape):
        """Items drawn i.i.d. from the proposal (no rejection): a uniform integer per draw, and
        for the popularity proposal a uniform float and two gathers from the alias table."""
        column = self.uniform_items(shape)
        if self.proposal == "uniform":
            return column
        keep = self._generator.uniform(shape, dtype=tf.float32) < tf.gather(
            self.alias_probability, column)
        return tf.where(keep, column, tf.gather(self.alias, column))

    def rank_factors(self, users, items, valid):
        """[N, U] importance factors c such that sum_s 1{draw s is an impostor} c_s estimates,
        without bias, the number of impostors among all items the user does not know.

        The accepted draws of user u are i.i.d. from q_u(k) = q(k) / (1 - Q_u) over the items
        the filter passes (module docstring), so E[1{impostor} / q_u(k)] counts the impostors:
        c = (1 - Q_u) / (V q(k)) with V the row's number of valid draws (U unless a row ran out
        of redraw rounds; whether a slot is filled does not depend on the item it holds, so the
        valid ones are still i.i.d. from q_u), and 0 for an invalid draw. Uniform proposal: J / U
        for every valid draw (the paper's floor(J M / U); its (1 - n_u / J) factor is left out,
        as there).
        """
        if self.proposal == "uniform":
            factor = tf.cast(self.n_items, tf.float32) / tf.cast(tf.shape(items)[1], tf.float32)
            return tf.where(valid, factor, 0.0)
        rest = 1.0 - tf.gather(self.known_mass, tf.reshape(users, [-1]))
        q = tf.gather(self.probability, items)
        size = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.float32), axis=1), 1.0)
        return tf.where(valid, (rest / size)[:, None] / q, 0.0)

    def pool_factors(self, pool):
        """[C] importance factors 1 / (C q(k)) of a pool of C i.i.d. draws shared by a batch
        (known positives masked, not redrawn: a masked draw simply counts 0, so this needs no
        Q_u): sum over the user's unmasked impostors of the factors estimates the rank without
        bias."""
        size = tf.cast(tf.shape(pool)[0], tf.float32)
        if self.proposal == "uniform":
            return tf.fill(tf.shape(pool), tf.cast(self.n_items, tf.float32) / size)
        return 1.0 / (size * tf.gather(self.probability, pool))

    def spare_columns(self, num_negatives: int) -> int:
        """E, the extra draws per row that replace flagged ones without a redraw round: sized
        from the data's rejection probabilities when the keys were given here (module
        docstring), else max(2, ceil(U / 4))."""
        base = max(2, -(-num_negatives // 4))
        if self._rejection is None:
            return base
        if num_negatives not in self._spares:
            p, weights = self._rejection
            spares = base
            while spares < 4 * num_negatives and np.dot(weights, scipy.stats.binom.sf(
                    spares, num_negatives + spares, p)) > REDRAW_RATE:
                spares += 1
            self._spares[num_negatives] = spares
        return self._spares[num_negatives]

    def call(self, users, num_negatives: int):
        users = tf.reshape(users, [-1, 1])
        rows = tf.shape(users)[0]
        columns = num_negatives + self.spare_columns(num_negatives)
        drawn = tf.ensure_shape(self.draw(tf.stack([rows, columns])), [None, columns])
        ok = tf.logical_not(self.maybe_known(users, drawn))
        items, bad = _fill_from_spares(drawn[:, :num_negatives], ok[:, :num_negatives],
                                       drawn[:, num_negatives:], ok[:, num_negatives:])

        def redraw(round_, items, bad):
            items = tf.where(bad, self.draw(tf.shape(items)), items)
            return round_ + 1, items, tf.logical_and(bad, self.maybe_known(users, items))

        _, items, bad = tf.while_loop(
            lambda round_, items, bad: tf.logical_and(round_ < self.max_rounds,
                                                      tf.reduce_any(bad)),
            redraw, (tf.constant(0), items, bad))
        return items, tf.logical_not(bad)

    def get_config(self):
        return {**super().get_config(), "n_items": self.n_items, "n_known": self.n_known,
                "max_rounds": self.max_rounds, "bits_per_key": self.bits_per_key,
                "seed": self.seed, "proposal": self.proposal, "beta": self.beta,
                "n_users": self.n_users}


class _Range(tf.keras.initializers.Initializer):
    """0, 1, ..., n - 1 (an alias table that keeps every column)."""

    def __call__(self, shape, dtype=None, **kwargs):
        return tf.range(shape[0], dtype=dtype or tf.int32)


def _rejection_profile(users, n_items: int, item_mass=None, bins: int = 1000):
    """The training pairs' rejection probabilities p_u (n_u / J, or Q_u = the sum of
    ``item_mass`` over the user's positives) as ``(p, weights)``: the largest p_u of each of up
    to ``bins`` groups of users of about equal pair counts, and the groups' shares of the pairs.
    Taking each group's largest p_u over-estimates the redraws, never under-estimates them."""
    counts = np.bincount(users)
    mass = counts / n_items if item_mass is None else np.bincount(users, weights=item_mass)
    active = np.flatnonzero(counts)
    if not len(active):
        return None
    order = active[np.argsort(mass[active], kind="stable")]
    share = np.cumsum(counts[order]) / counts[order].sum()
    group = np.minimum((share * bins).astype(np.int64), bins - 1)
    last = np.flatnonzero(np.diff(np.append(group, bins)))  # the last user of each group
    weights = np.diff(np.concatenate([[0.0], share[last]]))
    return np.minimum(mass[order[last]], 1.0), weights


def _fill_from_spares(head, head_ok, spares, spares_ok):
    """The k-th rejected draw of a row (``head_ok`` False) takes the row's k-th accepted spare.

    Returns ``(items, bad)``, ``bad`` marking the slots left without a spare. Counted with
    exclusive running counts and a [rows, U, E] match, so the shapes stay static for XLA.
    """
    wanted = _running_count(tf.logical_not(head_ok))
    offered = _running_count(spares_ok)
    match = tf.logical_and(
        tf.logical_and(tf.logical_not(head_ok)[:, :, None], spares_ok[:, None, :]),
        tf.equal(wanted[:, :, None], offered[:, None, :]))  # at most one True per slot
    replacement = tf.reduce_sum(tf.where(match, spares[:, None, :], 0), axis=2)
    items = tf.where(head_ok, head, replacement)
    return items, tf.logical_not(tf.logical_or(head_ok, tf.reduce_any(match, axis=2)))


def _running_count(flags):
    """[rows, C] bool -> int32 count of True in each row before each column (static C).

    C - 1 additions of columns, which XLA fuses into one loop; ``tf.cumsum`` lowers to a padded
    reduce-window that took a millisecond on an 8,192 x 20 batch here.
    """
    flags = tf.cast(flags, tf.int32)
    counts = [tf.zeros_like(flags[:, 0])]
    for column in range(flags.shape[1] - 1):
        counts.append(counts[-1] + flags[:, column])
    return tf.stack(counts, axis=1)
