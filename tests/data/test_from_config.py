"""cml_tf.data.from_config: one file split with the paper's protocol, files as given, and data
paths that do not depend on the folder a run was started from."""

import json
import logging
import os

import ml_collections
import numpy as np
import pandas as pd
import pytest

from cml_tf.config import get_config
from cml_tf.data import load_interactions_file, make_synthetic, split_per_user
from cml_tf.data.from_config import absolute_paths, load_data


def write_pairs(path, interactions):
    users, items = interactions.pairs()
    pd.DataFrame({"user": interactions.user_ids[users],
                  "item": interactions.item_ids[items]}).to_csv(path, index=False)
    return path


@pytest.fixture
def one_file(tmp_path):
    data = make_synthetic(n_users=200, n_items=150, n_clusters=4, mean_per_user=10,
                          with_features=False)
    return write_pairs(tmp_path / "likes.csv", data)


def config_for(**data):
    config = get_config()
    config.data.update(data)
    return config.data


def test_a_single_file_is_split_with_the_papers_protocol(one_file):
    split = load_data(config_for(train_path=str(one_file), split_seed=3))
    expected = split_per_user(load_interactions_file(one_file), seed=3)
    for part in ("train", "valid", "test"):
        assert (getattr(split, part).matrix != getattr(expected, part).matrix).nnz == 0, part
    assert split.valid.n_interactions > 0 and split.test.n_interactions > 0
    np.testing.assert_array_equal(split.train.user_ids, expected.train.user_ids)
    # data.split="paper" says the same explicitly.
    paper = load_data(config_for(train_path=str(one_file), split_seed=3, split="paper"))
    assert (paper.test.matrix != split.test.matrix).nnz == 0


def test_files_given_with_held_out_parts_are_not_re_split(one_file, tmp_path):
    split = split_per_user(load_interactions_file(one_file), seed=0)
    paths = {part: write_pairs(tmp_path / f"{part}.csv", getattr(split, part))
             for part in ("train", "test")}
    loaded = load_data(config_for(train_path=str(paths["train"]), test_path=str(paths["test"])))
    assert loaded.valid is None
    assert loaded.train.n_interactions == split.train.n_interactions
    unseen = int(loaded.test_unseen.sum())  # items only the test part has: misses
    assert loaded.test.n_interactions + unseen == split.test.n_interactions


def test_split_none_trains_on_everything_and_warns_that_nothing_is_evaluated(one_file, caplog):
    with caplog.at_level(logging.WARNING):
        split = load_data(config_for(train_path=str(one_file), split="none"))
    assert split.valid is None and split.test is None
    assert split.train.n_interactions == load_interactions_file(one_file).n_interactions
    assert "nothing will be evaluated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        synthetic = load_data(config_for(split="none"))
    assert synthetic.test is None and "nothing will be evaluated" in caplog.text


def test_a_config_json_from_before_data_split_reads_its_files_as_given(one_file):
    """Re-exporting an older run must rebuild the split it was trained on: no split then."""
    saved = json.loads(get_config().to_json_best_effort())
    del saved["data"]["split"]
    saved["data"]["train_path"] = str(one_file)
    split = load_data(ml_collections.ConfigDict(saved).data)
    assert split.valid is None and split.test is None


def test_absolute_paths_make_the_config_independent_of_the_folder(one_file, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(one_file.parent)
    data = config_for(train_path="likes.csv", test_path="", data_dir="~/sets")
    absolute_paths(data)
    assert data.train_path == str(one_file) and data.test_path == ""
    assert data.data_dir == os.path.join(os.path.expanduser("~"), "sets")
    monkeypatch.chdir(tmp_path.parent)
    assert load_data(data).train.n_users == 200  # read from anywhere
