"""WARP-MF on citeulike-t (paper Table 2, "WARP"): dot product, the rank weight and the in-graph
sampler CML uses (shared code), hinge margin 1 on scores.

    python -m cml_tf.main --config=configs/citeulike_t/warp.py --workdir=runs/warp

Tuning (validation Recall@50 only, split seed 0; the sweep is in
benchmarks/results/zoo_tuning.md): r=100, U=20 as CML, margin 1 as LightFM. Initial scale 0.1
capped it near 0.09 (L2 1e-2, no bias, U=5 did not help); at 0.01, lr 0.1 / 0.05 / 0.02 / 0.01
reached 0.10 / 0.16 / 0.225 (epoch 20) / 0.231 (epoch 40, still rising): lr 0.01 with up to
100 epochs (validation every 5, best weights kept, patience 2). L2 1e-4 did not help.
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "citeulike-t"
    config.model = ml_collections.ConfigDict(dict(
        name="warp",
        dim=100,             # r
        num_negatives=20,    # U
        margin=1.0,          # hinge margin on scores
        lambda_u=0.0,        # L2 on the batch's user rows (1e-4, 1e-2 did not help)
        lambda_v=0.0,        # L2 on the batch's item rows (bias included)
        use_bias=True,
        init_scale=0.01,   # small start: rarely seen items keep ~0 scores
    ))
    config.train.epochs = 100
    config.train.batch_size = 1024
    config.train.optimizer = "adagrad"
    config.train.learning_rate = 0.01
    config.train.lr_decay = 0.0  # tuned with a constant rate
    config.train.eval_every = 5
    config.train.patience = 2
    return config
