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

from cml_tf.config import ease_config


def get_config():
    # citeulike-t has 25,975 items: max_items is raised above the default 20,000 on purpose
    # (the memory it takes is above).
    config = ease_config(regularization=100.0, max_items=26_000)
    config.data.name = "citeulike-t"
    return config
