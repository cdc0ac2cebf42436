"""CML on MovieLens 1M (ratings >= 4 are positives, users with more than 10 of them), r = 100.

    python -m cml_tf.main --config=configs/movielens_1m.py --workdir=runs/ml1m

Data: $CML_TF_DATA/movielens-1m (downloaded there from GroupLens when absent: ml-1m.zip,
checked against its sha256), or any folder that holds ratings.dat (and movies.dat for genres),
read as it is, without a download or a checksum:

    python -m cml_tf.main --config=configs/movielens_1m.py --workdir=runs/ml1m_part \
        --config.data.data_dir=../shared/data/movielens-1m-part

The paper's per-user 60/20/20 split, seed 0; or your own split with
--config.data.train_path/valid_path/test_path.

How these settings were chosen: on the validation set of ../shared/data/movielens-1m-part
(users 1-2999 of ml-1m), see benchmarks/results/cml_variants.md (its "movielens-1m-part"
column; `python benchmarks/cml_variants.py`). These are configs/citeulike_t.py's settings (with
its 100 epochs and early stopping) and cml_tf/config.py's item-centric term (0.1) and cosine
decay (0.9), which configs/citeulike_t.py turns off. With the paper's loss and a constant rate
they reach validation Recall@50 0.391 / 0.390 (model seeds 0 / 1); the term and the decay
together 0.398 / 0.400. Alone at seed 0: margin 1.0 +0.004, r = 50 +0.007, the term +0.007, the
decay +0.001; margin 2.0, U x 2, r = 200 and every popularity or two-stage proposal lost.
`python -m cml_tf.tune` searches on from here.
"""

from cml_tf.config import get_config as base_config


def get_config():
    config = base_config()
    config.data.name = "movielens-1m"
    config.data.data_dir = ""  # default: $CML_TF_DATA/movielens-1m or ~/.cache/cml_tf/movielens-1m
    config.data.use_features = False

    config.model.dim = 100
    config.model.margin = 1.5
    config.model.num_negatives = 10
    config.model.lambda_c = 0.0

    config.train.epochs = 100
    config.train.batch_size = 8192
    config.train.learning_rate = 0.1
    config.train.eval_every = 5
    config.train.patience = 4  # early stopping after 20 epochs without a better validation R@50
    return config
