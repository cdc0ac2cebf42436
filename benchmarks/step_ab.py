"""Interleaved A/B of CML's training speed between two source trees (e.g. main and a branch).

    python benchmarks/step_ab.py --a=/work/main --b=. --rounds=6 [--config=configs/citeulike_t.py]

Each round runs one child process per tree, in alternating order (A B, then B A, ...), with
``PYTHONPATH`` set to that tree; the child builds the config's model on citeulike-t, trains one
warm-up epoch (tracing, XLA compilation) and then times ``--epochs`` epochs of ``model.fit`` one
by one (positive pairs per second, the progress bar off) and reports its fastest epoch: on a
shared machine the fastest epoch is the one least slowed by other jobs. Interleaving spreads the
load over both sides; the medians and the per-round ratio B / A are printed. This is a relative
measurement: on a loaded machine absolute figures are not meaningful.
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("a", None, "Source tree A (its cml_tf is imported).", required=True)
flags.DEFINE_string("b", None, "Source tree B.", required=True)
flags.DEFINE_integer("rounds", 6, "Rounds (one run of each tree per round).")
flags.DEFINE_integer("epochs", 6, "Timed epochs per run.")
flags.DEFINE_string("config", "configs/citeulike_t.py", "Config file, relative to each tree.")
FLAGS = flags.FLAGS

CHILD = """
import importlib.util, json, sys, time
import cml_tf
import tensorflow as tf
from cml_tf import train
from cml_tf.data.from_config import load_data
from cml_tf.data.pipeline import positive_pairs_dataset
from cml_tf.models import build_model
spec = importlib.util.spec_from_file_location("config", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.get_config()
config.data.data_dir = sys.argv[2]
split = load_data(config.data)
tf.keras.utils.set_random_seed(0)
model = build_model(config.model, split.train, seed=0, jit_sampling=config.train.jit_sampling)
model.compile(optimizer=train.make_optimizer(config.train))
data = positive_pairs_dataset(split.train, config.train.batch_size, seed=0)
model.fit(data, epochs=1, verbose=0)


class Timer(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rates.append(split.train.n_interactions / (time.perf_counter() - self.start))


rates = []
model.fit(data, epochs=int(sys.argv[3]), verbose=0, callbacks=[Timer()])
print(json.dumps({"pairs_per_second": max(rates)}))
"""


def run(tree, data_dir, epochs):
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "TF_CPP_MIN_LOG_LEVEL": "3"}
    config = os.path.join(os.path.abspath(tree), FLAGS.config)  # each tree's own config keys
    done = subprocess.run([sys.executable, "-c", CHILD, config, data_dir, str(epochs)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["pairs_per_second"]


def main(argv):
    del argv
    shared = os.environ.get("CML_TF_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..",
                                                                 "..", "shared", "data"))
    data_dir = os.path.join(shared, "citeulike-t")
    results = {"a": [], "b": []}
    for round_ in range(FLAGS.rounds):
        order = ("a", "b") if round_ % 2 == 0 else ("b", "a")
        for side in order:
            results[side].append(run(getattr(FLAGS, side), data_dir, FLAGS.epochs))
        print(f"round {round_ + 1}: A {results['a'][-1]:,.0f}  B {results['b'][-1]:,.0f} pairs/s "
              f"(B/A {results['b'][-1] / results['a'][-1]:.3f})", flush=True)
    ratios = [b / a for a, b in zip(results["a"], results["b"])]
    print(f"median pairs/s: A {statistics.median(results['a']):,.0f}, "
          f"B {statistics.median(results['b']):,.0f}; median B/A {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}), {FLAGS.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
