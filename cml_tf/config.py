"""The default experiment: CML on the embedded synthetic data set.

Every key the training command reads is here, with its meaning; experiment files in
``configs/`` start from this and change what they need. Override any key from the command line:
``--config.model.margin=1.0``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # model initialisation, negative sampling, batch order

    config.data = data = ml_collections.ConfigDict()
    data.name = "synthetic"      # "synthetic", a named data set (cml_tf.data.load), or "files"
    data.data_dir = ""           # named sets: default $CML_TF_DATA/<name> or ~/.cache/cml_tf/<name>
    data.download = True         # named sets: download when the files are absent
    data.use_features = False    # give the model the data set's item features (CML+F)
    data.min_tag_count = 5       # citeulike-t: keep tags on at least this many items
    data.split_seed = 0          # the per-user 60/20/20 split (paper section 4.2)
    # A split of your own (CSV with a user,item header; .tsv / .parquet by extension). Giving
    # train_path replaces the named data set's split; valid/test are optional.
    data.train_path = ""
    data.valid_path = ""
    data.test_path = ""
    data.user_col = "user"
    data.item_col = "item"
    data.features_from = ""      # with train_path: join this named set's item features by item id
                                 # ("synthetic": data.synthetic's); every item with features is
                                 # in the catalogue, trained or not
    data.synthetic = ml_collections.ConfigDict(dict(
        n_users=3000, n_items=2000, n_clusters=20, mean_per_user=30.0, min_per_user=5,
        popularity_exponent=0.8, bridge_fraction=0.2, noise=0.1, with_features=True, seed=0))

    config.model = model = ml_collections.ConfigDict()
    model.name = "cml"
    model.dim = 100              # r
    # The paper's m = 0.5 and lambda_c = 10 are CML's constructor defaults; on the data sets
    # tried here (the synthetic default, citeulike-t) m = 0.5 overfits and lambda_c has no
    # measurable effect (configs/citeulike_t.py says why), so experiments start from these.
    model.margin = 1.5           # m, on squared distances
    model.num_negatives = 20     # U
    model.lambda_c = 0.0         # covariance regularizer weight
    model.lambda_f = 1.0         # feature prior weight (CML+F)
    model.hidden = 256           # feature MLP hidden width
    model.dropout = 0.5          # feature MLP dropout
    model.normalize_features = False  # feature rows scaled to unit length before the MLP
    model.init_items_from_features = False

    config.train = train = ml_collections.ConfigDict()
    train.epochs = 20
    train.batch_size = 4096
    train.optimizer = "adagrad"  # any tf.keras.optimizers name; "adagrad" is SparseAdagrad
    train.learning_rate = 0.1
    train.eval_every = 5         # validation metrics every N epochs (and after the last)
    train.patience = 0           # early stopping after N evaluations without gain (0: off)
    train.monitor = "recall@50"  # validation metric for early stopping and best weights
    train.jit_sampling = True    # XLA for the negative sampling (see CML)
    train.jit_compile = False    # XLA for the whole train_step (CML without item features)
    train.verbose = 1            # Keras progress: 0 silent, 1 bar, 2 a line per epoch

    config.eval = ml_collections.ConfigDict(dict(ks=(10, 50, 100)))

    # Pictures of the metric space written into the workdir after training (cml_tf/viz.py):
    # item_map.png (the paper's Figure 5 for this run), training_curves.png, and the vectors for
    # TensorBoard's Embedding Projector in tensorboard/ (projector_config.pbtxt, projector/*.tsv).
    config.viz = viz = ml_collections.ConfigDict()
    viz.enabled = True           # write them after training (off: --config.viz.enabled=False)
    viz.method = "tsne"          # the item map's 2-D projection: "tsne" or "pca" (instant)
    viz.max_items = 1000         # the map shows the most liked items; t-SNE takes ~5 s per 1,000
    viz.n_labels = 10            # colours: the most frequent item tags (data with features)
    viz.ignore_tags = ("review",)  # never colours: on citeulike-t "review" (the most frequent
                                   # tag) names a kind of article, not a topic, and sits everywhere
    viz.projector_max_rows = 100_000  # projector vectors per table (most active first)

    # The SavedModel written to <workdir>/saved_model/<version>/ (cml_tf/export.py,
    # export/README.md). Index parameters left unset (None) come from the catalogue size.
    config.export = export = ml_collections.ConfigDict()
    export.enabled = True        # export at the end of training
    export.index = "scann"       # "scann" (needs ScaNN's ops to serve), "partitioned" or
                                 # "brute_force" (both: stock TensorFlow / TF Serving)
    export.k = 100               # results per query, fixed in the signatures
    export.version = 0           # version folder; 0 = the next free integer
    export.overwrite = False     # replace an existing version folder
    export.recall_target = 0.98  # tune the index's search depth to this recall@k vs exact
                                 # (on export.tune_users users); 0 = keep the defaults
    export.tune_users = 500
    export.report_users = 1000   # users of the index report's recall measurement
    export.report_queries = 200  # timed single-user calls in the index report
    placeholder = ml_collections.config_dict.placeholder
    export.scann = ml_collections.ConfigDict(dict(
        num_leaves=placeholder(int), num_leaves_to_search=placeholder(int),
        num_reordering_candidates=placeholder(int), tree=placeholder(bool)))
    export.partitioned = ml_collections.ConfigDict(dict(
        num_partitions=placeholder(int), num_partitions_to_search=placeholder(int)))
    return config
