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
    # How the data is split into train/validation/test (paper section 4.2: per user 60/20/20,
    # seeded by split_seed; users with < 5 interactions stay in train):
    #   "auto":  a named or the synthetic set is split so; a train_path alone is split so too;
    #            train_path with valid_path and/or test_path is used as given (not re-split);
    #   "paper": split train_path (or the named set) so; no valid_path/test_path allowed;
    #   "none":  no split: the files as given, a named set all train (nothing is evaluated
    #            unless valid_path/test_path are given; a warning says so).
    data.split = "auto"
    # The synthetic generator's SyntheticSpec (cml_tf/data/synthetic.py); scale multiplies
    # n_users and n_items (runs a large synthetic config scaled down).
    data.synthetic = ml_collections.ConfigDict(dict(
        n_users=3000, n_items=2000, n_clusters=20, mean_per_user=30.0, min_per_user=5,
        popularity_exponent=0.8, bridge_fraction=0.2, noise=0.1, with_features=True, seed=0,
        scale=1.0))

    config.model = model = ml_collections.ConfigDict()
    model.name = "cml"
    model.dim = 100              # r
    # The paper's m = 0.5 and lambda_c = 10 are CML's constructor defaults; on the data sets
    # tried here (the synthetic default, citeulike-t) m = 0.5 overfits and lambda_c has no
    # measurable effect (configs/citeulike_t.py says why), so experiments start from these.
    model.margin = 1.5           # m, on squared distances
    model.num_negatives = 20     # U
    # Negative sampling (cml_tf/models/cml.py): "uniform" (the paper's), "popularity" (U draws
    # per pair from (n_k + 1)^beta, n_k = the item's training positives; the rank weight becomes
    # an unbiased importance-weighted estimate) or "two_stage" (one pool of `candidates`
    # popularity draws per batch, the hardest per pair; Tran et al., SIGIR 2019).
    # Evidence (benchmarks/results/cml_variants.md, validation Recall@50 on citeulike-t,
    # movielens-1m-part and the synthetic default): uniform stays the default. Popularity lost
    # on all three at every beta (0.25: -0.007 to -0.011; 1: -0.05 to -0.25) and two-stage at
    # every pool size and beta tried (64 and 256 draws, beta 0 and 0.5: -0.03 to -0.32).
    model.sampling = "uniform"
    model.sampling_beta = 0.5    # beta of the popularity proposal (0 = uniform)
    model.candidates = 0         # C, the two-stage pool size (two_stage needs >= 1; 0 = off)
    # Weight of the item-centric term [m + d(i,j)^2 - d(j,k*)^2]_+ (symmetric metric learning,
    # Li et al., AAAI 2020; 0 = off). 0.1 with train.lr_decay = 0.9 (the defaults) against
    # neither, model seeds 0 / 1: citeulike-t +0.000 / +0.001 (its seed-to-seed spread is
    # 0.002), movielens-1m-part +0.007 / +0.010, synthetic +0.013 / +0.004; never a loss. Alone
    # at seed 0 it gained +0.002 / +0.007 / +0.007 (same order); 0.3 about as much, 1 lost on
    # citeulike-t and movielens-1m-part.
    model.lambda_item = 0.1
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
    # In [0, 1): cosine decay over train.epochs to learning_rate * (1 - lr_decay) at the end
    # (0 = constant). 0.9 gained on all three validation sets at seed 0 (+0.004 / +0.001 /
    # +0.009), and with model.lambda_item as above (cml_variants.md). The zoo configs keep 0:
    # they were tuned with a constant rate and the decay was measured for CML only.
    train.lr_decay = 0.9
    train.eval_every = 5         # validation metrics every N epochs (and after the last)
    train.valid_users = 10_000   # validation (during training and the final "valid" metrics)
                                 # scores a fixed sample of this many users, drawn with
                                 # data.split_seed; 0 = every user. The test is always exact.
    train.patience = 0           # early stopping after N evaluations without gain (0: off)
    train.monitor = "recall@50"  # validation metric for early stopping and best weights
    train.jit_sampling = True    # XLA for the negative sampling (see CML)
    train.jit_compile = False    # XLA for the whole train_step (CML without item features)
    train.verbose = 1            # Keras progress: 0 silent, 1 bar, 2 a line per epoch

    config.eval = ml_collections.ConfigDict(dict(ks=(10, 50, 100)))

    # Training on several devices or machines (cml_tf/distribute.py, README "Scaling out"). The
    # same command runs on every task of a cluster; the TF_CONFIG variable says which task it is.
    config.distribute = distribute = ml_collections.ConfigDict()
    distribute.strategy = "auto"  # "auto": parameter_server if TF_CONFIG has ps tasks, else
                                  # multi_worker if it has several workers, else mirrored with
                                  # several GPUs, else default (one device); or any of them by name
    distribute.max_shards = 0     # parameter_server: shards per table at most (0: the ps tasks)
    distribute.min_shard_bytes = 256 << 10  # parameter_server: a table gets one shard per this
                                  # many bytes (rounded up), at most max_shards

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
    export.allow_untrained = False  # export a model that learned nothing (its validation metric
                                    # below the popularity baseline's); refused by default
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

    config.tune = tune_config()
    return config


def ease_config(regularization: float, max_items: int = 20_000) -> ml_collections.ConfigDict:
    """The default config with EASE (cml_tf/models/ease.py) as the model: one training step is
    the whole closed-form solve, so one epoch with every pair in one batch is the model (the
    optimizer is unused), and the export serves it exactly. Config files of EASE start here and
    set the data."""
    config = get_config()
    config.model = ml_collections.ConfigDict(dict(
        name="ease",
        regularization=float(regularization),  # lambda
        max_items=int(max_items),  # refuse larger catalogues (B is n_items^2 float32)
        solver="auto",             # "direct" (J^3) or "woodbury" (users^3), whichever is cheaper
    ))
    config.train.epochs = 1             # the closed-form solve
    config.train.batch_size = 1 << 30   # every pair in one batch: one step
    config.train.eval_every = 1
    config.train.patience = 0
    config.export.index = "brute_force"  # EASE's vectors have one coordinate per item
    config.export.recall_target = 0.0   # exact: nothing to tune
    config.viz.enabled = False          # no 2-D map or projector of item-dimensional vectors
    return config


def tune_config() -> ml_collections.ConfigDict:
    """``config.tune``: what ``python -m cml_tf.tune`` searches (cml_tf/tune.py; README "Tune on
    your data"). The training command ignores this section."""
    tune = ml_collections.ConfigDict()
    tune.metric = "recall@50"    # validation metric to maximise (also the trials' train.monitor)
    tune.budget_minutes = 20.0   # wall clock of the whole study, over every session of it; a
                                 # re-run with a larger budget (or trials) extends the study
    tune.trials = 0              # stop after this many finished trials (0: the budget decides)
    tune.trial_minutes = 5.0     # a trial still training then stops (best weights kept); 0: none
    tune.pruner = "median"       # "median" (Optuna's MedianPruner), "hyperband" or "none"
    tune.pruner_startup_trials = 3  # finished trials before any is pruned
    tune.pruner_warmup_epochs = 0   # epochs of a trial before it may be pruned
    tune.sampler_startup_trials = 8  # TPE draws at random until this many trials exist
    tune.start_from_config = True  # trial 0 of a new study is the config's own values
    tune.keep_trial_checkpoints = False  # trials' checkpoints/ are removed when they end
    tune.log_trials = False      # also show each trial's training lines (validation passes)

    # One search space per model (cml_tf/tuning/space.py: "uniform LOW HIGH", "log LOW HIGH",
    # "int LOW HIGH [STEP]", "logint LOW HIGH", "choice A B ...", "off"; "... if <key>=<v>|<w>").
    # Override one: --config.tune.space.cml.model.margin='uniform 0.5 2.5'; drop one: =off.
    # train.epochs is never searched: it is the cap, and early stopping (train.patience
    # evaluations without gain) ends a trial at its plateau with its best weights; the pruner
    # stops trials that trail the others at the same epoch.
    tune.space = space = ml_collections.ConfigDict()
    cml = dict(
        model=dict(
            # on squared distances in the unit ball (0..4): 0.5 overfits citeulike-t, 1.5 is
            # best there, 1.9 starts to lose (benchmarks/results/cml_tuning.md)
            margin="uniform 0.25 2.5",
            # U: a harder sampled negative per extra draw, cost linear in U; 10-40 won on
            # citeulike-t, 60 gained nothing more
            num_negatives="logint 5 80",
            # r: capacity against cost (linear) and overfitting; the paper uses 100
            dim="choice 32 64 100 128 200",
            # the negative proposal: uniform or item popularity^beta. On the validation sets
            # of citeulike-t, movielens-1m-part and the synthetic data (benchmarks/results/
            # cml_variants.md) beta 0.25 lost 0.007-0.011 Recall@50, beta 1 lost 0.05-0.25, and
            # the two-stage pool lost 0.03-0.32 at every size and beta tried, so two_stage is
            # not in the default choice (add it: 'choice uniform popularity two_stage') and
            # beta stays low
            sampling="choice uniform popularity",
            sampling_beta="uniform 0.0 0.5 if model.sampling=popularity|two_stage",
            candidates="logint 16 256 if model.sampling=two_stage",  # the two-stage pool
            # the item-centric (symmetric) term's weight: 0.1-0.3 gained on all three sets
            # (+0.001 to +0.011), 1 lost on citeulike-t and movielens-1m-part
            lambda_item="uniform 0.0 0.5",
        ),
        train=dict(
            # AdaGrad (SparseAdagrad): 0.1 on citeulike-t; in a citeulike-t study (docs/
            # tuning.png) rates of 0.011-0.044 had not learnt by epoch 5 (valid R@50
            # 0.02-0.08, against 0.19 at 0.1) and were pruned
            learning_rate="log 0.05 0.5",
            # larger batches: more pairs/s, fewer updates per epoch
            batch_size="choice 1024 2048 4096 8192 16384",
            # final rate = rate * (1 - decay), cosine; 0.9 gained on all three sets
            lr_decay="uniform 0.0 0.9",
        ))
    space.cml = cml
    cml_f = {section: dict(values) for section, values in cml.items()}
    cml_f["model"].update(
        # weight of the feature prior: 1 (the paper's) to 30 gained on citeulike-t, 100 lost
        lambda_f="log 0.3 100",
        hidden="choice 256 512 1024",       # MLP width: 1024 gained little for twice the cost
        dropout="uniform 0.0 0.6",          # 0.5 (the paper's) lost to 0 on citeulike-t
        normalize_features="choice True False",  # unit rows converge faster
    )
    space.cml_f = cml_f
    # WRMF / implicit ALS: factors, lambda and the confidence scale alpha (Hu et al. used 40)
    space.wrmf = dict(model=dict(dim="choice 32 64 100 128 200",
                                 regularization="log 1e-4 10.0", alpha="log 1.0 200.0"))
    sampled = dict(
        # dot-product models' scores are unbounded, so the rate matters more than for CML
        # (WARP: 0.01-0.02 best on citeulike-t, 0.1 diverged to 0.10)
        learning_rate="log 0.002 0.2")
    l2 = dict(  # L2 on the batch's rows; 0 is a choice: it won for the WARP models
        lambda_u="choice 0.0 1e-5 1e-4 1e-3 1e-2 1e-1",
        lambda_v="choice 0.0 1e-5 1e-4 1e-3 1e-2 1e-1")
    space.bpr = dict(model=dict(dim="choice 32 64 100 128 200", **l2),  # 1e-2 won for BPR
                     train=dict(learning_rate="log 0.01 0.5"))
    warp = dict(dim="choice 32 64 100 128 200", num_negatives="logint 5 80",
                margin="uniform 0.1 2.0", **l2)  # margin: the hinge on score differences
    space.warp = dict(model=warp, train=sampled)
    space.fm = dict(model=dict(warp, normalize="choice True False"), train=sampled)
    mlp = dict(hidden="choice 128 256 512", dropout="uniform 0.0 0.6")
    # VBPR: dim >= 64 keeps its feature_dim (50) below dim
    space.vbpr = dict(model=dict(warp, dim="choice 64 100 128 200", **mlp), train=sampled)
    space.cdl = dict(model=dict(warp, **mlp), train=sampled)
    # EASE: lambda of the closed form (model.regularization); Steck found 200-3000 on ML-20M /
    # Netflix, validation picked 100 on citeulike-t (50: -0.001, 200: -0.003) and 500 on
    # movielens-1m-part (50: -0.045, 2000: -0.013)
    space.ease = dict(model=dict(regularization="log 10.0 5000.0"))
    return tune
