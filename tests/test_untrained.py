"""A model that learned nothing is said to have learned nothing, and is not exported unless
asked (issue 15.8; the export when asked: test_export_interrupted.py)."""

import json
import logging

import pytest

from cml_tf import main, train

from run_helpers import exporting_config


def untrained_config():
    return exporting_config(epochs=1, learning_rate=1e-9)  # stays where it was initialised


@pytest.mark.slow
def test_a_model_that_learned_nothing_says_so_and_is_not_exported(tmp_path, caplog):
    workdir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="absl"):
        metrics = train.train_and_evaluate(untrained_config(), str(workdir))
    assert metrics["learned_nothing"] is True
    popularity = metrics["valid_popularity"]["recall@50"]
    assert metrics["valid"]["recall@50"] < popularity < 1
    assert "export.allow_untrained" in metrics["export"]["refused"]
    assert not (workdir / "saved_model").exists()
    written = json.loads((workdir / "metrics.json").read_text())
    assert written["learned_nothing"] is True and written["export"] == metrics["export"]
    assert any("learned nothing" in r.getMessage() and f"{popularity:.4f}" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    summary = main.summary(metrics, str(workdir))
    assert "WARNING: the model learned nothing useful" in summary
    assert "WARNING: not exported" in summary

