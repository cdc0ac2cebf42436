"""WRMF (implicit ALS) on citeulike-t (paper Table 2, "WRMF"): confidence 1 + alpha r, CG solves.

    python -m cml_tf.main --config=configs/citeulike_t/wrmf.py --workdir=runs/wrmf

One training step is one full ALS sweep and the batch holds every training pair, so an epoch is
one ALS iteration (the optimizer is unused).

Tuning: the setting is `implicit`'s (alpha 40, lambda 0.01, 15 iterations, CG 3 steps), the
cross-check setting of benchmarks/table2.py; on the validation set it gives Recall@50 0.273.
It was not swept further (benchmarks/results/zoo_tuning.md).
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "citeulike-t"
    config.model = ml_collections.ConfigDict(dict(
        name="wrmf",
        dim=100,               # factors
        alpha=40.0,            # confidence c = 1 + alpha r
        regularization=0.01,   # lambda on every row
        solver="cg",           # "cg" (warm-started conjugate gradient) or "exact" (Cholesky)
        cg_steps=3,            # CG steps per half-sweep (implicit's default)
        init_scale=0.01,       # uniform [0, 0.01) start, as implicit
    ))
    config.train.epochs = 15            # ALS iterations
    config.train.batch_size = 1 << 30   # every pair in one batch: one step = one sweep per epoch
    config.train.eval_every = 5
    config.train.patience = 0
    return config
