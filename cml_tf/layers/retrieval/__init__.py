"""Euclidean (and dot-product) top-K retrieval layers on top of TensorFlow Recommenders.

CML ranks items by squared Euclidean distance ``d(q, v) = ||q - v||^2``: the best items are the
closest. Every layer here returns ``(scores, identifiers)`` of shape ``[batch, k]`` with

    scores = -||q - v||^2          (metric="squared_l2", the default)
    scores = q . v                 (metric="dot_product", for matrix-factorisation baselines)

sorted DESCENDING (best first), so that they compose with ``tfrs.metrics.FactorizedTopK``, with
``TopK.query_with_exclusions`` and with each other. ``k`` is clamped to the catalogue size.

Layers (all ``tfrs.layers.factorized_top_k.TopK`` subclasses):

* :class:`BruteForce` -- exact. ``||q - v||^2 = ||q||^2 - 2 q.v + ||v||^2`` with ``||v||^2``
  precomputed at index time: one matmul per batch, standard TensorFlow ops only.
* :class:`Partitioned` -- approximate, standard TensorFlow ops only (loads in a stock TF Serving
  without ScaNN's custom ops). k-means partitions of the items (an inverted file, "IVF"); a query
  scans the ``num_partitions_to_search`` partitions with the nearest centroids and re-ranks their
  items exactly. Searching every partition returns the brute-force result.
* :class:`ScaNN` -- approximate, ScaNN's tree + asymmetric hashing + exact re-ordering
  (``distance_measure="squared_l2"``). A SavedModel that uses it needs ``import scann`` to load.

Slots that cannot be filled (fewer than ``k`` items left after exclusions, or a ScaNN search that
found fewer than ``k`` neighbours) hold score ``NaN`` and identifier ``-1`` (integer identifiers)
or ``b""`` (string identifiers), the padding convention ``tfrs.metrics.FactorizedTopK`` already
understands for ScaNN. Excluded identifiers are never returned.

What is wrong with the stock TFRS layers for CML, and what we do about it (line numbers refer to
``tensorflow_recommenders/layers/factorized_top_k.py`` and ``metrics/factorized_top_k.py`` in
TFRS 0.7.7):

1. ``tfrs.layers.factorized_top_k.ScaNN.call`` (layers l.764-793) returns ScaNN's raw
   ``distances``; with ``distance_measure="squared_l2"`` these are squared distances sorted
   ascending (smallest = best), i.e. "lower is better", the opposite of every other TFRS layer.
2. ``TopK.query_with_exclusions`` (layers l.242-288) asks for ``k + exclusions.shape[1]``
   results and re-ranks them in ``_exclude`` (l.83-115) with ``tf.math.top_k`` of
   ``scores - 1e5 * excluded`` (l.107-111): it assumes higher is better, so on squared distances
   it keeps the k FARTHEST of the retrieved items, farthest first (when an excluded id was not
   among the retrieved, the nearest non-excluded items are dropped). It also reads the static
   ``exclusions.shape[1]`` (a ``[None, None]`` serving signature fails), and when fewer than
   ``k`` items remain it returns excluded items with their original scores.
3. ``tfrs.metrics.FactorizedTopK.update_state`` (metrics l.155-161) asserts that the scores are
   sorted descending (ascending distances fail that assertion), and its score-based path
   (l.133-134, l.183-192) scores the true candidate by a dot product, which is not comparable with
   ``-||q - v||^2``.

Fixes: :class:`ScaNN` subclasses the TFRS layer and overrides ``call`` to return
``-distance`` best first (ScaNN's NaN-padded slots keep their NaN score; their dummy index 0 is
replaced by the padding identifier); every layer here overrides ``query_with_exclusions`` with
an order-correct, NaN-aware exclusion (:func:`exclude`, masking with ``-inf``) that reads the
number of exclusions dynamically; and :class:`EuclideanFactorizedTopK` is a drop-in subclass of
``tfrs.metrics.FactorizedTopK`` whose score-based path scores the true candidate with the layer's
own metric (the stock metric works unchanged with our layers in its id-based mode).

Modules: :mod:`.common` (scores, exclusions, the layers' shared mixin), :mod:`.brute_force`,
:mod:`.partitioned`, :mod:`.scann`, :mod:`.metric`.
"""

from cml_tf.layers.retrieval.brute_force import BruteForce
from cml_tf.layers.retrieval.common import (METRICS, exclude, padding_identifier, score_matrix,
                                            score_pairs)
from cml_tf.layers.retrieval.metric import EuclideanFactorizedTopK
from cml_tf.layers.retrieval.partitioned import (Partitioned, kmeans, partitioned_defaults,
                                                 split_large_partitions)
from cml_tf.layers.retrieval.scann import (REORDER_MULTIPLE, SCANN_BRUTE_FORCE_BELOW,
                                           SCANN_TREE_FROM, ScaNN, scann_defaults)

__all__ = ["BruteForce", "EuclideanFactorizedTopK", "METRICS", "Partitioned", "REORDER_MULTIPLE",
           "SCANN_BRUTE_FORCE_BELOW", "SCANN_TREE_FROM", "ScaNN", "exclude", "kmeans",
           "padding_identifier", "partitioned_defaults", "scann_defaults", "score_matrix",
           "score_pairs", "split_large_partitions"]
