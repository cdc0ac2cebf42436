"""Everything that can be checked is checked before the workdir is touched or a step is trained
(issue 15.9)."""

import json

import pytest

from cml_tf import train

from run_helpers import tiny_config


@pytest.mark.parametrize("section, key, value, message", [
    ("export", "index", "bogus", "export.index must be one of"),
    ("export", "k", 0, "export.k must be >= 1"),
    ("export", "k", 5000, r"export.k=5000 is larger than the number of items \(200\)"),
    ("export", "recall_target", 2.0, r"export.recall_target must be in \[0, 1\]"),
    ("export", "version", -1, "export.version must be >= 0"),
    ("train", "monitor", "recall@7", "train.monitor 'recall@7' is not among the metrics"),
    ("train", "optimizer", "nonsense", "unknown optimizer 'nonsense'"),
    ("train", "patience", -1, "train.patience must be >= 0"),
    ("train", "valid_users", -1, "train.valid_users must be >= 0"),
])
def test_a_setting_that_would_fail_later_is_refused_before_anything_is_written(
        section, key, value, message, tmp_path):
    config = tiny_config()
    config.export.enabled = True
    config[section][key] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_ids_the_export_cannot_store_are_refused_before_training(tmp_path):
    lines = ["user,item"] + [f"u{u},i{(u * 7 + j) % 30}" for u in range(40) for j in range(6)]
    lines.append('"two\nlines",i1')
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    config = tiny_config()
    config.eval.ks = (10,)
    config.train.monitor = "recall@10"
    config.export.update(enabled=True, k=10)
    config.data.train_path = str(tmp_path / "train.csv")
    with pytest.raises(ValueError, match="line breaks"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_python_api_records_relative_data_paths_absolute(tmp_path, monkeypatch):
    lines = ["user,item"] + [f"u{u},i{(u * 7 + j) % 30}" for u in range(40) for j in range(6)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    config = tiny_config(epochs=1)
    config.eval.ks = (10,)
    config.train.monitor = "recall@10"
    config.data.update(train_path="data/train.csv", split="auto")
    train.train_and_evaluate(config, "run")
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["data"]["train_path"] == str(tmp_path / "data" / "train.csv")
    assert config.data.train_path == "data/train.csv"  # the caller's config is left alone
