"""``train_and_evaluate(..., callbacks=...)`` (CONTRACTS.md item 1), what TensorBoard gets
(issue 15.16) and the timings in metrics.json (CONTRACTS.md item 2, issue 15.15)."""

import pathlib

import pytest
import tensorflow as tf

from cml_tf import train

from run_helpers import tiny_config


def event_tags(folder: pathlib.Path) -> dict:
    """tag -> number of values written, over every event file below ``folder``."""
    from tensorboard.backend.event_processing import event_file_loader
    tags = {}
    for path in folder.rglob("events.out.tfevents.*"):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                tags[value.tag] = tags.get(value.tag, 0) + 1
    return tags


class Watch(tf.keras.callbacks.Callback):
    """Records what each epoch's logs hold and stops training after epoch 4."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((epoch + 1, (logs or {}).get("val_recall@50")))
        if epoch + 1 == 4:
            self.model.stop_training = True


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """(workdir, metrics, Watch) of a 6-epoch run, validated every 2, stopped after epoch 4."""
    workdir = tmp_path_factory.mktemp("stopped") / "run"
    watch = Watch()
    metrics = train.train_and_evaluate(tiny_config(epochs=6, eval_every=2), str(workdir),
                                       callbacks=[watch])
    return workdir, metrics, watch


@pytest.mark.slow
def test_extra_callbacks_see_the_validation_metric_and_may_stop_training(stopped):
    _, metrics, watch = stopped
    assert [epoch for epoch, _ in watch.seen] == [1, 2, 3, 4]
    assert watch.seen[0][1] is None and watch.seen[2][1] is None  # no pass in epochs 1 and 3
    assert [value for _, value in watch.seen[1::2]] == [
        row["recall@50"] for row in metrics["validation_history"]]
    assert metrics["epochs"] == 4


@pytest.mark.slow
def test_tensorboard_gets_validation_recall_once_per_pass(stopped):
    tags = event_tags(stopped[0] / "tensorboard")
    assert tags["validation/recall@50"] == 2
    assert not [tag for tag in tags if tag.startswith("epoch_") and "@" in tag], tags
    assert tags["epoch_loss"] == 4


@pytest.mark.slow
def test_timings_count_the_training_steps_apart_from_validation(stopped):
    _, metrics, _ = stopped
    epochs = metrics["epoch_seconds"]
    assert len(epochs) == 4 and all(seconds > 0 for seconds in epochs)
    assert metrics["train_seconds"] == pytest.approx(sum(epochs))
    assert metrics["train_pairs_per_second"] == pytest.approx(
        metrics["data"]["train_interactions"] * 4 / metrics["train_seconds"])
    assert len(metrics["valid_eval_seconds"]) == 2  # the passes after epochs 2 and 4
    assert isinstance(metrics["test_eval_seconds"], float) and metrics["test_eval_seconds"] > 0
    # Steps and validation passes are disjoint parts of model.fit's time.
    assert metrics["train_seconds"] + sum(metrics["valid_eval_seconds"]) < metrics["fit_seconds"]


@pytest.mark.slow
def test_an_exception_of_an_extra_callback_propagates_unchanged(tmp_path):
    class Pruned(Exception):
        pass

    class Prune(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Pruned(f"pruned at {logs['val_recall@50']:.3f}")

    with pytest.raises(Pruned, match=r"pruned at 0\.\d+"):
        train.train_and_evaluate(tiny_config(epochs=2), str(tmp_path / "run"),
                                 callbacks=[Prune()])
