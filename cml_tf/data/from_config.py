"""The split a config's ``data`` section names (keys: ``cml_tf/config.py``): the synthetic set, a
named data set split with the paper's protocol, or a person's own split files, with the item
features the config asks for. Training, the export script and the pictures all load data here."""

import dataclasses
import logging

import numpy as np

from cml_tf.data import registry
from cml_tf.data.features import join_item_features
from cml_tf.data.files import load_split_files
from cml_tf.data.split import Split, split_per_user
from cml_tf.data.synthetic import make_synthetic

log = logging.getLogger(__name__)


def load_data(data_config) -> Split:
    """The split the data config asks for (see ``cml_tf/config.py`` for the keys)."""
    if data_config.train_path:
        split = _split_from_files(data_config)
        _log_catalogue(split)
        return split
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
    split = split_per_user(data, seed=data_config.split_seed)
    _log_catalogue(split)
    return split


def _loader_kwargs(data_config):
    if data_config.name == "citeulike-t":
        return {"min_tag_count": data_config.min_tag_count,
                "with_features": bool(data_config.use_features)}
    return {}


def _split_from_files(data_config) -> Split:
    features = None
    if data_config.use_features:
        source = data_config.features_from or (
            data_config.name if data_config.name not in ("synthetic", "files") else "")
        if not source:
            raise ValueError("data.use_features with your own split needs data.features_from "
                             "(the named data set whose item features to join by item id, or "
                             "'synthetic' for the data.synthetic set's)")
        features = (make_synthetic(**data_config.synthetic.to_dict()) if source == "synthetic"
                    else registry.load(source, data_dir=data_config.data_dir or None,
                                       download=data_config.download,
                                       **_loader_kwargs(_with_name(data_config, source))))
    # With features, the catalogue is every item that has features or interactions: an item
    # with features but no training interaction (only in the feature source, or only held
    # out) is learnt through the feature prior alone, scored, and exported.
    featured = None if features is None else \
        features.item_ids[np.diff(features.item_features.indptr) > 0]
    split = load_split_files(data_config.train_path, data_config.valid_path or None,
                             data_config.test_path or None, user_col=data_config.user_col,
                             item_col=data_config.item_col, extra_items=featured)
    train = split.train
    if features is not None:
        train = join_item_features(train, features.item_ids, features.item_features,
                                   features.feature_names)
    return dataclasses.replace(split, train=train)


def _log_catalogue(split: Split) -> None:
    """Logs how many items of the catalogue have no training interaction."""
    untrained = int((split.train.item_counts() == 0).sum())
    if untrained:
        log.info("%d of %d items have no training interaction%s", untrained,
                 split.train.n_items, ": they are learnt through the feature prior alone"
                 if split.train.item_features is not None else "")


def _with_name(data_config, name):
    config = data_config.copy_and_resolve_references()
    config.name = name
    config.use_features = True
    return config
