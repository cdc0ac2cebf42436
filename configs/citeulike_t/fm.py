"""FM on citeulike-t with tag features (paper Table 2, "FM"): user, item-identity and tag factors
(LightFM's hybrid model: item vector = normalised sum of identity and tag factors), WARP loss.

    python -m cml_tf.main --config=configs/citeulike_t/fm.py --workdir=runs/fm

Tuning (validation Recall@50 only, split seed 0; benchmarks/results/zoo_tuning.md): r=100,
U=20, initial scale 0.01 and no L2 as WARP-MF's sweep found; lr 0.02 gave 0.250 at 10 epochs and
0.300 at 20, still rising: up to 30 epochs (validation every 10, best weights kept). One setting
only (8 s per epoch here): longer training may still help.
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "citeulike-t"
    config.data.use_features = True      # tags on >= 5 items (paper section 4.1)
    config.model = ml_collections.ConfigDict(dict(
        name="fm",
        dim=100,
        loss="warp",         # the paper trains every baseline with WARP
        num_negatives=20,
        margin=1.0,
        lambda_u=0.0,
        lambda_v=0.0,        # on the assembled item vectors of the batch
        use_bias=True,
        init_scale=0.01,   # small start: rarely seen items keep ~0 scores
        normalize=True,      # identity + tags weighted 1 / (1 + number of tags)
    ))
    config.train.epochs = 30
    config.train.batch_size = 1024
    config.train.optimizer = "adagrad"
    config.train.learning_rate = 0.02
    config.train.lr_decay = 0.0  # tuned with a constant rate
    config.train.eval_every = 10
    config.train.patience = 1
    return config
