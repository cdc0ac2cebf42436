"""CML on synthetic data of EchoNest's shape (paper Table 1): the scale test of one machine.

    python -m cml_tf.main --config=configs/synthetic_echonest.py --workdir=runs/echonest_shape
    python -m cml_tf.main --config=configs/synthetic_echonest.py \
        --config.data.synthetic.scale=0.01   # the same run on 1% of the users and items

The paper's EchoNest (Table 1): 766,882 users, 260,417 items, 7,261,443 ratings, 65.88% of them
on the 5% most popular items; no item features. The real set's loader exists
(``data.name = "echonest"``, cml_tf/data/echonest.py) but the file has no public download any
more, so this config draws a stand-in of the same shape from cml_tf/data/synthetic.py:
7,249,373 interactions and 65.8% on the top 5% of items (seed 0, ``scale`` 1), with

* per-user counts 1 + geometric (mean 10.9 draws before duplicates merge): a third of the
  users have fewer than 5 interactions and stay in train only (section 4.2's rule), as a
  long-tailed listening log's would; ~510k users have validation and test items;
* 100 taste clusters of 2,604 songs whose popularity falls as rank^-1.06, which puts two
  thirds of the likes on the top 5% of the songs. Scaled down the clusters shrink and the
  head weakens (39% on the top 5% at ``scale`` 0.05): the small runs test the code path, not
  the shape.

benchmarks/scale.py runs this config and times every phase (benchmarks/results/scale.md).
Training: batch 32,768 (134 steps an epoch) at AdaGrad 0.2, 10 epochs, validation every 2 on a
fixed sample of ``train.valid_users`` users; the test at the end is exact over all users and
items.
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config():
    config = base_config()
    config.data.name = "synthetic"
    config.data.use_features = False
    config.data.synthetic = ml_collections.ConfigDict(dict(
        n_users=766_882, n_items=260_417, n_clusters=100, mean_per_user=10.9, min_per_user=1,
        popularity_exponent=1.06, bridge_fraction=0.2, noise=0.1, with_features=False, seed=0,
        scale=1.0))

    config.model.dim = 100
    config.model.margin = 1.5
    config.model.num_negatives = 20
    config.model.lambda_c = 0.0

    config.train.epochs = 10
    config.train.batch_size = 32_768
    config.train.learning_rate = 0.2
    config.train.eval_every = 2
    config.train.patience = 0
    config.train.verbose = 2  # one line per epoch: 134 steps need no progress bar
    return config
