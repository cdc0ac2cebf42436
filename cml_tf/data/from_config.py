"""The split a config's ``data`` section names (keys: ``cml_tf/config.py``): the synthetic set, a
named data set split with the paper's protocol, or a person's own files (a ready-made split, or
one file split here), with the item features the config asks for. Training, the export script
and the pictures all load data here."""

import dataclasses
import logging
import os
import pathlib

import numpy as np

from cml_tf.data import registry
from cml_tf.data.errors import DataError
from cml_tf.data.features import extend_catalogue, join_item_features
from cml_tf.data.files import load_interactions_file, load_split_files
from cml_tf.data.split import Split, split_per_user
from cml_tf.data.synthetic import make_synthetic

log = logging.getLogger(__name__)

PATH_KEYS = ("train_path", "valid_path", "test_path", "data_dir")
SPLITS = ("auto", "paper", "none")


def absolute_paths(data_config):
    """Makes the config's data paths absolute (in place; returns it), so that a run's
    ``config.json`` reads the same data from any folder (re-exporting a workdir, say)."""
    for key in PATH_KEYS:
        if data_config.get(key):
            data_config[key] = os.path.abspath(os.path.expanduser(data_config[key]))
    return data_config


def load_data(data_config) -> Split:
    """The split the data config asks for (see ``cml_tf/config.py`` for the keys)."""
    mode = data_config.get("split", "none")  # a config.json written before data.split
    if mode not in SPLITS:
        raise ValueError(f"data.split must be one of {', '.join(SPLITS)}, got {mode!r}")
    if data_config.train_path:
        split = _split_from_files(data_config, mode)
    else:
        split = _named_split(data_config, mode)
    if split.valid is None and split.test is None:
        log.warning("no validation or test data: nothing will be evaluated (data.split=%r; "
                    "'auto' or 'paper' split one file 60/20/20 per user)", mode)
    _log_catalogue(split)
    return split


def _named_split(data_config, mode: str) -> Split:
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
    if mode == "none":
        return Split(train=data)
    return split_per_user(data, seed=data_config.split_seed)


def _loader_kwargs(data_config):
    if data_config.name == "citeulike-t":
        return {"min_tag_count": data_config.min_tag_count,
                "with_features": bool(data_config.use_features)}
    return {}


def _split_from_files(data_config, mode: str) -> Split:
    held_out = [key for key in ("valid_path", "test_path") if data_config[key]]
    for key in ["train_path"] + held_out:
        _require_path(data_config, key)
    if mode == "paper" and held_out:
        raise ValueError(f"data.split='paper' splits data.train_path itself; it cannot use "
                         f"data.{' and data.'.join(held_out)} too (data.split='auto' reads the "
                         "files as given)")
    features = _feature_source(data_config)
    if mode == "paper" or (mode == "auto" and not held_out):
        data = load_interactions_file(data_config.train_path, user_col=data_config.user_col,
                                      item_col=data_config.item_col)
        log.info("%s: split 60/20/20 per user with the paper's protocol (data.split=%r, "
                 "split_seed %d)", data_config.train_path, mode, data_config.split_seed)
        return split_per_user(_with_features(data, features), seed=data_config.split_seed)
    split = load_split_files(data_config.train_path, data_config.valid_path or None,
                             data_config.test_path or None, user_col=data_config.user_col,
                             item_col=data_config.item_col, extra_items=_featured(features))
    return dataclasses.replace(split, train=_with_features(split.train, features))


def _require_path(data_config, key: str):
    path = pathlib.Path(data_config[key]).expanduser()
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to the current folder {os.getcwd()})"
        raise DataError(f"data.{key}: {data_config[key]} does not exist{where}")


def _feature_source(data_config):
    """The data set whose item features own files get (None without data.use_features)."""
    if not data_config.use_features:
        return None
    source = data_config.features_from or (
        data_config.name if data_config.name not in ("synthetic", "files") else "")
    if not source:
        raise ValueError("data.use_features with your own split needs data.features_from "
                         "(the named data set whose item features to join by item id, or "
                         "'synthetic' for the data.synthetic set's)")
    if source == "synthetic":
        return make_synthetic(**data_config.synthetic.to_dict())
    return registry.load(source, data_dir=data_config.data_dir or None,
                         download=data_config.download,
                         **_loader_kwargs(_with_name(data_config, source)))


def _featured(features):
    """Ids of the items with at least one feature (None without features)."""
    if features is None:
        return None
    return features.item_ids[np.diff(features.item_features.indptr) > 0]


def _with_features(train, features):
    """``train`` with the features joined by item id. With features the catalogue is every item
    that has features or interactions: an item with features but no training interaction (only
    in the feature source, or only held out) is learnt through the feature prior alone, scored
    and exported."""
    if features is None:
        return train
    train = extend_catalogue(train, _featured(features))
    return join_item_features(train, features.item_ids, features.item_features,
                              features.feature_names)


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
