"""``train_and_evaluate(..., callbacks=...)`` (CONTRACTS.md item 1) and what TensorBoard gets."""

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


@pytest.mark.slow
def test_extra_callbacks_see_the_validation_metric_and_may_stop_training(tmp_path):
    seen = []

    class Watch(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch + 1, (logs or {}).get("val_recall@50")))
            if epoch + 1 == 4:
                self.model.stop_training = True

    config = tiny_config(epochs=6, eval_every=2)
    metrics = train.train_and_evaluate(config, str(tmp_path / "run"), callbacks=[Watch()])
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4]
    assert seen[0][1] is None and seen[2][1] is None  # no validation pass in epochs 1 and 3
    assert [value for _, value in seen[1::2]] == [
        row["recall@50"] for row in metrics["validation_history"]]
    assert metrics["epochs"] == 4
    # Validation recall reaches TensorBoard once per pass, under validation/ (issue 15.16).
    tags = event_tags(tmp_path / "run" / "tensorboard")
    assert tags["validation/recall@50"] == 2
    assert not [tag for tag in tags if tag.startswith("epoch_") and "@" in tag], tags
    assert tags["epoch_loss"] == 4


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
