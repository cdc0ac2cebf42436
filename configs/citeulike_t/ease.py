"""EASE (Steck, WWW 2019) on citeulike-t: the closed-form item-item model (cml_tf/models/ease.py).

    python -m cml_tf.main --config=configs/citeulike_t/ease.py --workdir=runs/ease

One training step is the whole solve and the batch holds every training pair, so one epoch is
the model (the optimizer is unused). With 7,947 users and 25,975 items the solve goes through
Woodbury's identity (a 7,947 x 7,947 inverse instead of 25,975 x 25,975). B is 25,975 x 25,975
float32 (2.5 GiB): the solve peaks near 4.5 GiB, every checkpoint and the export hold B again,
and the export (user vectors are rows of X, item vectors columns of B) is about 3.3 GB on disk.
So this config raises model.max_items above the default 20,000 on purpose.

Tuning (validation Recall@50 only, split seed 0): lambda = 50, 100, 200 gave 0.2403, 0.2412,
0.2381 (benchmarks/results/sweep_ease_citeulike_t_b.md and _c.md), so lambda = 100: sparser
than MovieLens (10 positives per user in training), citeulike-t wants less shrinkage than the
500 that is best on movielens-1m-part (configs/movielens_1m/ease.py).
The export serves it exactly (brute force).
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "citeulike-t"
    config.model = ml_collections.ConfigDict(dict(
        name="ease",
        regularization=100.0,  # lambda
        max_items=26_000,      # citeulike-t has 25,975 items (see above for the memory)
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
