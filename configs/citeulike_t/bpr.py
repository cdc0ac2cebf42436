"""BPR-MF on citeulike-t (paper Table 2, "BPR"): log-sigmoid pairwise loss, one uniform negative.

    python -m cml_tf.main --config=configs/citeulike_t/bpr.py --workdir=runs/bpr

Tuning (validation Recall@50 only, split seed 0; the sweep is in
benchmarks/results/zoo_tuning.md): r fixed at the paper's 100 and U=1 (BPR's single negative).
An initial scale of 0.1 capped validation Recall@50 near 0.10 whatever the learning rate (0.1,
0.3, 1.0, Adam 0.01); with 0.01 the learning rate sweep 0.02 / 0.05 / 0.1 / 0.2 gave 0.123 /
0.174 / 0.184 / 0.149 at 30 epochs (lr 0.1). Without L2 it peaks at 0.20-0.21 (epochs 80-130);
L2 lambda 1e-3 / 1e-2 / 3e-2 gave 0.211 / 0.238 / 0.228 at 80 epochs, and lambda 1e-2 reached
0.252 at 160, still rising: lambda 1e-2, up to 300 epochs (validation every 20 epochs, best
weights kept, patience 2).
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "citeulike-t"
    config.model = ml_collections.ConfigDict(dict(
        name="bpr",
        dim=100,             # r
        num_negatives=1,     # BPR's single uniformly drawn negative
        lambda_u=0.01,       # L2 on the batch's user rows
        lambda_v=0.01,       # L2 on the batch's item rows (bias included)
        use_bias=True,       # item bias as an extra coordinate
        init_scale=0.01,   # N(0, 0.01^2): rarely trained items keep ~0 scores
    ))
    config.train.epochs = 300
    config.train.batch_size = 1024
    config.train.optimizer = "adagrad"
    config.train.learning_rate = 0.1
    config.train.lr_decay = 0.0  # tuned with a constant rate
    config.train.eval_every = 20
    config.train.patience = 2
    return config
