"""The training command: outputs, workdir rules, user splits, divergence, bad input."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from cml_tf import train
from cml_tf.config import get_config
from cml_tf.data.split import split_per_user
from cml_tf.data.synthetic import make_synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_config(**train_overrides):
    config = get_config()
    config.data.synthetic.update(n_users=300, n_items=200, n_clusters=5, mean_per_user=12)
    config.model.dim = 16
    config.train.update({"epochs": 3, "batch_size": 512, "eval_every": 1, "verbose": 0,
                         **train_overrides})
    config.export.enabled = False
    return config


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cml_tf.main", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd or REPO)


@pytest.mark.slow
def test_default_command_without_flags_trains_into_a_temporary_workdir():
    done = run_cli()
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"outputs in (\S+):", done.stdout)
    assert match, done.stdout
    workdir = pathlib.Path(match.group(1))
    try:
        metrics = json.loads((workdir / "metrics.json").read_text())
        assert metrics["test"]["recall@50"] > 0.3  # planted clusters are easy to recover
        for key in ("recall@50", "recall@100", "ndcg@50"):
            assert 0 <= metrics["test"][key] <= 1
        assert metrics["valid"]["recall@50"] > 0.3
        assert metrics["learned_nothing"] is False  # it beats popularity (issue 15.8)
        assert metrics["valid"]["recall@50"] > metrics["valid_popularity"]["recall@50"]
        assert metrics["epochs"] >= 1 and metrics["train_seconds"] > 0
        assert metrics["train_pairs_per_second"] > 0
        assert json.loads((workdir / "config.json").read_text())["data"]["name"] == "synthetic"
        assert any((workdir / "tensorboard").rglob("events.out.tfevents.*"))
        assert any((workdir / "checkpoints").iterdir())
        listed = done.stdout[match.end():]
        for name in ("metrics.json", "saved_model/", "item_map.png", "training_curves.png"):
            assert name in listed and (workdir / name.rstrip("/")).exists(), name
        assert "Traceback" not in done.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_train_and_evaluate_writes_metrics_and_refuses_a_finished_workdir(tmp_path):
    config = small_config()
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["recall@50"] == pytest.approx(metrics["test"]["recall@50"])
    assert set(written["valid"]) >= {"recall@10", "ndcg@50", "precision@100"}
    assert written["epochs"] == 3
    assert [h["epoch"] for h in written["validation_history"]] == [1, 2, 3]
    with pytest.raises(train.WorkdirError, match="finished run"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    again = train.train_and_evaluate(config, str(tmp_path / "run"), overwrite=True)
    assert again["test"]["recall@50"] == pytest.approx(metrics["test"]["recall@50"])


def test_jit_compile_runs_the_whole_train_step_under_xla(tmp_path):
    config = small_config(jit_compile=True)
    config.data.use_features = False
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["test"]["recall@50"] > 0.3  # the planted clusters are found, as without XLA


def test_jit_compile_with_the_feature_prior_says_which_ops_prevent_it(tmp_path):
    config = small_config(jit_compile=True)
    config.data.use_features = True
    with pytest.raises(ValueError, match="train.jit_compile: XLA cannot compile .*RaggedRange"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    config = small_config(epochs=2)
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, str(workdir))
    (workdir / "metrics.json").unlink()  # as if it had crashed after epoch 2 ...
    config.train.epochs = 4               # ... of a 4-epoch run
    (workdir / "config.json").write_text(config.to_json_best_effort(sort_keys=True, indent=2))
    metrics = train.train_and_evaluate(config, str(workdir))
    assert metrics["epochs"] == 4
    assert [h["epoch"] for h in metrics["validation_history"]] == [1, 2, 3, 4]
    other = small_config(epochs=5)
    (workdir / "metrics.json").unlink()
    with pytest.raises(train.WorkdirError, match="different config"):
        train.train_and_evaluate(other, str(workdir))


def test_nan_loss_stops_with_a_message_naming_the_step(tmp_path):
    config = small_config(epochs=4, learning_rate=3e38)  # updates overflow to inf, then NaN
    with pytest.raises(train.TrainingDiverged, match=r"NaN at epoch 1, step \d+; last good "
                                                     r"checkpoint: none"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_after_a_nan_the_last_checkpoint_stays_usable(tmp_path):
    from cml_tf.callbacks import EpochCheckpoint, NanGuard
    from cml_tf.data.pipeline import positive_pairs_dataset
    from cml_tf.models import CML
    data = make_synthetic(n_users=200, n_items=100, n_clusters=4, with_features=False)
    model = CML.from_interactions(data, dim=8)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    guard = NanGuard()
    checkpoint = EpochCheckpoint(str(tmp_path / "checkpoints"), model, guard)
    dataset = positive_pairs_dataset(data, 256)
    model.fit(dataset, epochs=2, callbacks=[guard, checkpoint], verbose=0)
    good = model.score(tf.range(10)).numpy()
    model.optimizer.learning_rate.assign(3e38)
    model.fit(dataset, epochs=4, initial_epoch=2, callbacks=[guard, checkpoint], verbose=0)
    assert guard.diverged_at is not None and guard.diverged_at[0] == 3
    assert not np.all(np.isfinite(model.user_vectors))
    assert checkpoint.latest.endswith("ckpt-2")  # the NaN epoch was not saved
    fresh = CML.from_interactions(data, dim=8)
    fresh.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    assert EpochCheckpoint(str(tmp_path / "checkpoints"), fresh).restore() == 2
    np.testing.assert_array_equal(fresh.score(tf.range(10)).numpy(), good)


def test_user_supplied_split_files(tmp_path):
    data = make_synthetic(n_users=300, n_items=200, n_clusters=5, mean_per_user=12,
                          with_features=False)
    split = split_per_user(data, seed=0)
    paths = {}
    for part in ("train", "valid", "test"):
        users, items = getattr(split, part).pairs()
        frame = pd.DataFrame({"user": data.user_ids[users], "item": data.item_ids[items]})
        if part == "test":  # a held-out item nobody trained on, and an unknown user
            frame = pd.concat([frame, pd.DataFrame({"user": ["u0", "stranger"],
                                                    "item": ["brand-new", "i1"]})])
        paths[part] = tmp_path / f"{part}.csv"
        frame.to_csv(paths[part], index=False)
    config = small_config()
    config.data.train_path = str(paths["train"])
    config.data.valid_path = str(paths["valid"])
    config.data.test_path = str(paths["test"])
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    trained_items = set(split.train.pairs()[1].tolist())
    _, test_items = split.test.pairs()
    expected_unseen = sum(item not in trained_items for item in test_items.tolist()) + 1
    assert metrics["test"]["unseen_items"] == expected_unseen
    assert metrics["test"]["unknown_user_rows"] == 1
    assert metrics["data"]["train_interactions"] == split.train.n_interactions


# Through a real process, one case per kind (a bad value, a bad cut-off, an unknown key); the
# rest of the matrix runs in-process in tests/test_bad_input.py (test_bad_config_values and
# test_bad_flags_and_overrides), at a fraction of the cost.
@pytest.mark.parametrize("override, message", [
    ("--config.model.dim=0", "dim must be > 0"),
    ("--config.eval.ks=(10,50,5000)", "only 2000 items"),
    ("--config.train.epoch=3", "unknown key 'epoch'"),
])
def test_bad_config_is_one_readable_line(override, message, tmp_path):
    done = run_cli(override, f"--workdir={tmp_path / 'run'}")
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_split_file_names_the_path(tmp_path):
    done = run_cli(f"--config.data.train_path={tmp_path / 'absent.csv'}",
                   f"--workdir={tmp_path / 'run'}")
    assert done.returncode != 0
    assert "absent.csv" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_short_citeulike_run_learns(citeulike_dir, tmp_path):
    config = get_config()
    config.data.name = "citeulike-t"
    config.data.data_dir = str(citeulike_dir)
    config.model.margin = 1.5
    config.train.update(epochs=10, batch_size=8192, eval_every=10, verbose=0)
    config.export.enabled = False
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["data"] == {"users": 7947, "items": 25975, "train_interactions": 82707,
                               "items_without_training_interactions": 3073}
    assert metrics["test"]["recall@50"] > 0.15
