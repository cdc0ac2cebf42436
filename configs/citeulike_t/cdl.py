"""CDL-MLP on citeulike-t with tag features (paper Table 2, "CDL"): item vector = feature MLP
output (256 ReLU, dropout 0.5, as CML+F) + a free offset kept small by lambda_v, WARP loss.

    python -m cml_tf.main --config=configs/citeulike_t/cdl.py --workdir=runs/cdl

Tuning (validation Recall@50 only, split seed 0; benchmarks/results/zoo_tuning.md): r=100,
U=20, initial scale 0.01 and no L2 as WARP-MF's sweep found; lr 0.02 gave 0.314 at 10 epochs and
0.329 at 20: 20 epochs (validation every 10, best weights kept). One setting only (16 s per
epoch here); lambda_v (the offsets' pull to the feature vectors) was not swept.
"""

import ml_collections

from cml_tf.config import get_config as base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.data.name = "citeulike-t"
    config.data.use_features = True
    config.model = ml_collections.ConfigDict(dict(
        name="cdl",
        dim=100,
        hidden=256,
        dropout=0.5,
        loss="warp",
        num_negatives=20,
        margin=1.0,
        lambda_u=0.0,
        lambda_v=0.0,        # on the free offsets (not swept: time)
        use_bias=True,
        init_scale=0.01,   # small start: rarely seen items keep ~0 scores
    ))
    config.train.epochs = 20
    config.train.batch_size = 1024
    config.train.optimizer = "adagrad"
    config.train.learning_rate = 0.02
    config.train.lr_decay = 0.0  # tuned with a constant rate
    config.train.eval_every = 10
    config.train.patience = 1
    return config
