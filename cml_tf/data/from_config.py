"""The split a config's ``data`` section names (keys: ``cml_tf/config.py``): the synthetic set, a
named data set split with the paper's protocol, or a person's own split files, with the item
features the config asks for. Training, the export script and the pictures all load data here."""

import dataclasses

from cml_tf.data import registry
from cml_tf.data.features import join_item_features
from cml_tf.data.files import load_split_files
from cml_tf.data.split import Split, split_per_user
from cml_tf.data.synthetic import make_synthetic


def load_data(data_config) -> Split:
    """The split the data config asks for (see ``cml_tf/config.py`` for the keys)."""
    if data_config.train_path:
        return _split_from_files(data_config)
    if data_config.name == "synthetic":
        data = make_synthetic(**data_config.synthetic.to_dict())
    elif data_config.name == "files":
        raise ValueError("data.name='files' needs data.train_path (and optionally valid_path, "
                         "test_path)")
    else:
        data = registry.load(data_config.name, data_dir=data_config.data_dir or None,
                             download=data_config.download, **_loader_kwargs(data_config))
    if not data_config.use_features and data.item_features is not None:
        data = dataclasses.replace(data, item_features=None, feature_names=None)
    return split_per_user(data, seed=data_config.split_seed)


def _loader_kwargs(data_config):
    if data_config.name == "citeulike-t":
        return {"min_tag_count": data_config.min_tag_count,
                "with_features": bool(data_config.use_features)}
    return {}


def _split_from_files(data_config) -> Split:
    split = load_split_files(data_config.train_path, data_config.valid_path or None,
                             data_config.test_path or None, user_col=data_config.user_col,
                             item_col=data_config.item_col)
    train = split.train
    if data_config.use_features:
        source = data_config.features_from or (
            data_config.name if data_config.name not in ("synthetic", "files") else "")
        if not source:
            raise ValueError("data.use_features with your own split needs data.features_from "
                             "(the named data set whose item features to join by item id)")
        features = registry.load(source, data_dir=data_config.data_dir or None,
                                 download=data_config.download,
                                 **_loader_kwargs(_with_name(data_config, source)))
        train = join_item_features(train, features.item_ids, features.item_features,
                                   features.feature_names)
    return dataclasses.replace(split, train=train)


def _with_name(data_config, name):
    config = data_config.copy_and_resolve_references()
    config.name = name
    config.use_features = True
    return config
