"""Keras layers of CML: unit-ball embeddings, WARP hinge loss, covariance regularizer, feature
prior, and Euclidean top-K retrieval (``cml_tf.layers.retrieval``)."""

from cml_tf.layers.covariance import CovarianceRegularizer
from cml_tf.layers.embedding import UnitBallEmbedding
from cml_tf.layers.feature_prior import FeaturePrior
from cml_tf.layers.warp import WarpHingeLoss
from cml_tf.layers.retrieval import (BruteForce, EuclideanFactorizedTopK, Partitioned, ScaNN,
                                     partitioned_defaults, scann_defaults)
