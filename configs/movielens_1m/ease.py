"""EASE (Steck, WWW 2019) on MovieLens 1M: the closed-form item-item model (cml_tf/models/ease.py).

    python -m cml_tf.main --config=configs/movielens_1m/ease.py --workdir=runs/ml1m_ease \
        --config.data.data_dir=../shared/data/movielens-1m-part

One training step is the whole solve and the batch holds every training pair, so one epoch is
the model (the optimizer is unused). B is 3,706 x 3,706 float32 on the full ml-1m (55 MB), a
solve takes seconds.

Tuning (validation Recall@50 only, split seed 0, on ../shared/data/movielens-1m-part):
lambda = 50, 100, 200, 500, 1000, 2000 gave 0.3339, 0.3531, 0.3702, 0.3793, 0.3760, 0.3661
(benchmarks/results/sweep_ease_movielens_1m_part.md), so lambda = 500 (Steck used 500 on ML-20M).
The export serves it exactly (brute force: EASE's vectors have one coordinate per item, which an
approximate index does not compress well).
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "movielens-1m"
    config.data.data_dir = ""  # default: $CML_TF_DATA/movielens-1m or ~/.cache/cml_tf/movielens-1m
    config.model = ml_collections.ConfigDict(dict(
        name="ease",
        regularization=500.0,  # lambda
        max_items=20_000,      # refuse larger catalogues (B is n_items^2 float32)
        solver="auto",         # "direct" (J^3) or "woodbury" (users^3), whichever is cheaper
    ))
    config.train.epochs = 1             # the closed-form solve
    config.train.batch_size = 1 << 30   # every pair in one batch: one step
    config.train.eval_every = 1
    config.train.patience = 0
    config.export.index = "brute_force"
    config.export.recall_target = 0.0   # exact: nothing to tune
    config.viz.enabled = False          # no 2-D map or projector of item-dimensional vectors
    return config
