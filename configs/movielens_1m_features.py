"""CML+F on MovieLens 1M: CML with the dropout-MLP feature prior on the movies' genres (18 binary
features from movies.dat), r = 100.

    python -m cml_tf.main --config=configs/movielens_1m_features.py --workdir=runs/ml1m_f \
        --config.data.data_dir=../shared/data/movielens-1m-part

Data as configs/movielens_1m.py: $CML_TF_DATA/movielens-1m (downloaded when absent), or any
folder that holds ratings.dat and movies.dat, read as it is. The paper's MovieLens features also
had IMDb plot keywords, which are not redistributable; genres alone are a coarse prior (a movie
shares its genre row with hundreds of others).

How these settings were chosen (validation only, ../shared/data/movielens-1m-part, split seed 0):
configs/movielens_1m.py's with CML+F's feature prior of configs/citeulike_t_features.py. Genres
barely help here: validation Recall@50 0.3924 (lambda_f 1, dropout 0), 0.3906 (lambda_f 1,
dropout 0.5), 0.3867 and 0.3841 (lambda_f 10, dropout 0 / 0.5), against 0.391 for CML without
features (benchmarks/results/sweep_cml_f_movielens_1m_part.md; one seed, so the 0.002 between
the two dropouts is within what another seed moves). lambda_f = 1 is kept, and dropout 0.5, the
paper's and citeulike-t's.
"""

from cml_tf.config import get_config as base_config


def get_config():
    config = base_config()
    config.data.name = "movielens-1m"
    config.data.data_dir = ""  # default: $CML_TF_DATA/movielens-1m or ~/.cache/cml_tf/movielens-1m
    config.data.use_features = True
    config.data.features_from = "movielens-1m"  # for a split of your own: join genres by item id

    config.model.dim = 100
    config.model.margin = 1.5
    config.model.num_negatives = 10
    config.model.lambda_c = 0.0
    config.model.lambda_f = 1.0
    config.model.hidden = 256
    config.model.dropout = 0.5
    config.model.normalize_features = True
    config.model.init_items_from_features = False

    config.train.epochs = 100
    config.train.batch_size = 8192
    config.train.learning_rate = 0.1
    config.train.eval_every = 5
    config.train.patience = 4
    # The paper's loss and a constant rate, as this config was tuned: the item-centric term and
    # the decay of cml_tf/config.py were measured for CML without features only.
    config.model.lambda_item = 0.0
    config.train.lr_decay = 0.0
    return config
