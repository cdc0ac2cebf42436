"""CML+F on citeulike-t (paper Table 2, "CML+F"): CML with the dropout-MLP feature prior on the
articles' tags (tags used on at least 5 articles: 8,311 features), r = 100.

    python -m cml_tf.main --config=configs/citeulike_t_features.py --workdir=runs/cml_f

With your own split of citeulike-t (user = line number of users.dat, item = item number), the
tag features are joined by item id from the data folder:

    python -m cml_tf.main --config=configs/citeulike_t_features.py \
        --config.data.train_path=train.csv --config.data.valid_path=valid.csv \
        --config.data.test_path=test.csv

How these settings were chosen (validation Recall@50/100 only, split seed 0, model seed 0;
benchmarks/results/cml_tuning.md):
* The prior must reach items that are rarely liked: 9% of test pairs hit items with no training
  like and another 26% items with one or two. The prior loss therefore also covers one
  uniformly drawn item per pair (see cml_tf/models/cml.py).
* dropout 0.5 / hidden 256 / lambda_f 1 (the paper's): 0.272 / 0.351; dropout 0 and hidden 512:
  0.290 / 0.371; then lambda_f: 3 -> 0.307 / 0.393, 5 -> 0.310 / 0.400, 10 -> 0.316 / 0.405,
  20 -> 0.315 / 0.407, 30 -> 0.316 / 0.410, 100 -> 0.299 / 0.393; hidden 1024 at lambda_f 20:
  0.318 / 0.410 (twice the cost).
* min_tag_count 2 (more, rarer tags): 0.307 / 0.395, worse than 5.
* init_items_from_features: item vectors start at f(x) (+0.004 R@50 at lambda_f 1).
* normalize_features (each article's tag row scaled to unit length before the MLP): converges
  faster (epoch 15: 0.301 / 0.398 against 0.292 / 0.385) and, with lambda_f 30, ends at
  0.317 / 0.414 after 40 epochs (hidden 1024 on top: 0.321 / 0.411, no better for twice the cost;
  tf-idf weighting instead: no better than plain unit rows).
* num_negatives (U, negatives drawn per positive pair; lambda_f 30, unit rows): U 20 -> 0.317 /
  0.414 (best of 40 epochs), U 30 -> 0.329 / 0.418 (epoch 40), U 40 -> 0.334 / 0.421
  (epoch 50), U 60 -> 0.335 / 0.418 (epoch 40, half again the sampling cost). With the prior
  pulling items towards f(x), a harder (more often violated) hardest negative keeps the metric
  loss informative for longer; U 40 gave the best Recall@100.
"""

from cml_tf.config import get_config as base_config


def get_config():
    config = base_config()
    config.data.name = "citeulike-t"
    config.data.use_features = True
    config.data.features_from = "citeulike-t"  # for a split of your own: join tags by item id
    config.data.min_tag_count = 5

    config.model.dim = 100
    config.model.margin = 1.5
    config.model.num_negatives = 40
    config.model.lambda_c = 0.0
    config.model.lambda_f = 30.0
    config.model.hidden = 512
    config.model.dropout = 0.0
    config.model.normalize_features = True
    config.model.init_items_from_features = True

    config.train.epochs = 60
    config.train.batch_size = 8192
    config.train.learning_rate = 0.1
    config.train.eval_every = 5
    config.train.patience = 4
    # The paper's loss and a constant rate, as this config was tuned: the item-centric term and
    # the decay of cml_tf/config.py were measured for CML without features only.
    config.model.lambda_item = 0.0
    config.train.lr_decay = 0.0
    return config
