"""CML's train_step under tf.distribute.MirroredStrategy on two logical CPU devices.

Runs in a fresh process: logical devices must be configured before TensorFlow initialises.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import cml_tf
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cml_tf.data.pipeline import positive_pairs_dataset
    from cml_tf.data.split import split_per_user
    from cml_tf.data.synthetic import make_synthetic
    from cml_tf.evaluation import evaluate
    from cml_tf.models import CML
    from cml_tf.optimizers import SparseAdagrad

    split = split_per_user(make_synthetic(n_users=600, n_items=400, n_clusters=6,
                                          mean_per_user=15, seed=1), seed=0)

    class BallCheck(tf.keras.callbacks.Callback):
        worst = 0.0
        def on_train_batch_end(self, batch, logs=None):
            for table in (self.model.user_embedding.embeddings,
                          self.model.item_embedding.embeddings):
                for value in getattr(table, "values", [table]):  # every replica's copy
                    self.worst = max(self.worst, float(tf.reduce_max(tf.norm(value, axis=1))))

    def run(strategy, optimizer=SparseAdagrad):
        with strategy.scope():
            model = CML.from_interactions(split.train, dim=8, margin=1.0, seed=0)
            model.compile(optimizer=optimizer(0.1))
        check = BallCheck()
        model.fit(positive_pairs_dataset(split.train, 256, seed=0), epochs=20, verbose=0,
                  callbacks=[check])
        return {"recall": evaluate(model, split, "valid", ks=(20,))["recall@20"],
                "worst_norm": check.worst, "replicas": strategy.num_replicas_in_sync}

    print("RESULT", json.dumps({
        "one": run(tf.distribute.OneDeviceStrategy("/cpu:0")),
        "two": run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
        "two_keras_adagrad": run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                                 tf.keras.optimizers.Adagrad)}))
""")


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device_and_keeps_the_ball():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    one, two, keras = result["one"], result["two"], result["two_keras_adagrad"]
    assert two["replicas"] == keras["replicas"] == 2
    # Every row of both tables, on every replica, after every step, inside the unit ball:
    # censored by SparseAdagrad as it writes the rows, or by the step (Keras' AdaGrad).
    for run in (one, two, keras):
        assert run["worst_norm"] <= 1 + 1e-5
    assert one["recall"] > 0.3
    assert abs(one["recall"] - two["recall"]) < 0.05
    assert abs(one["recall"] - keras["recall"]) < 0.05
