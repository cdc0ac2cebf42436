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

from cml_tf.config import ease_config


def get_config():
    config = ease_config(regularization=500.0)
    config.data.name = "movielens-1m"
    config.data.data_dir = ""  # default: $CML_TF_DATA/movielens-1m or ~/.cache/cml_tf/movielens-1m
    return config
