"""Hyperparameter sweep on the VALIDATION set (the way the configs were tuned).

    python benchmarks/sweep.py --config=configs/citeulike_t.py --name=cml_margin \
        --grid='model.margin=0.5,1.0,1.5,2.0' --grid='model.num_negatives=10,20'

Trains every combination of the grid (the cartesian product of the --grid flags) with
train_and_evaluate, export off, and reports the best validation Recall@50 / Recall@100 and the
epoch where it was reached. Test figures are never computed here: choosing settings must not
look at the test set. Writes benchmarks/results/sweep_<name>.{md,json}.
"""

import ast
import itertools
import sys

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import app, flags

from common import quiet_config, run, write_table

flags.DEFINE_string("config", "configs/citeulike_t.py", "Config file (repository-relative).")
flags.DEFINE_string("name", "sweep", "Name of the result files.")
flags.DEFINE_multi_string("grid", [], "key=v1,v2,... (a config key and its values).")
flags.DEFINE_multi_string("set", [], "key=value applied to every run.")
FLAGS = flags.FLAGS


def parse(text):
    key, _, values = text.partition("=")
    return key.strip(), [ast.literal_eval(v) for v in values.split(",")]


def assign(config, key, value):
    *path, leaf = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[leaf] = value


def main(argv):
    del argv
    grid = [parse(g) for g in FLAGS.grid]
    rows, raw = [], []
    for values in itertools.product(*[v for _, v in grid]):
        config = quiet_config(FLAGS.config)
        for item in FLAGS.set:
            key, (value,) = parse(item)
            assign(config, key, value)
        setting = dict(zip([k for k, _ in grid], values))
        for key, value in setting.items():
            assign(config, key, value)
        metrics = run(config, skip_test=True)  # the test set is never evaluated
        best = max(metrics["validation_history"], key=lambda h: h["recall@50"])
        raw.append({"setting": setting, "best": best, "train_seconds": metrics["train_seconds"]})
        rows.append([", ".join(f"{k}={v}" for k, v in setting.items()),
                     f"{best['recall@50']:.4f}", f"{best['recall@100']:.4f}", best["epoch"],
                     f"{metrics['train_seconds']:.0f}"])
        print(rows[-1], flush=True)
    write_table(f"sweep_{FLAGS.name}", f"Validation sweep: {FLAGS.config}",
                ["setting", "valid Recall@50", "valid Recall@100", "best epoch", "train s"],
                rows, raw, "python benchmarks/sweep.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    app.run(main)
