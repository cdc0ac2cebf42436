"""CML and CML+F on citeulike-t with the paper's split: test Recall@50/100 beside the paper.

    python benchmarks/citeulike_t.py [--seeds=0,1,2] [--models=cml,cml_f]

Trains each model with its config (configs/citeulike_t.py, configs/citeulike_t_features.py:
settings chosen on the validation set) once per seed (the split stays seed 0; the seed changes
initialisation, sampling and batch order), and reports the median and the spread of the test
figures (export and pictures off). Writes benchmarks/results/citeulike_t.{md,json}.
"""

import json
import sys

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import app, flags

from common import RESULTS, SHARED_DATA, median_spread, run_seed, write_table

flags.DEFINE_list("seeds", ["0", "1", "2"], "Model seeds.")
flags.DEFINE_list("models", ["cml", "cml_f"], "Which of cml, cml_f to train.")
flags.DEFINE_bool("keep_other_models", True, "Keep the saved runs of the models not trained now "
                  "in the table (e.g. --models=cml_f after a change that only affects CML+F).")
FLAGS = flags.FLAGS

MODELS = {
    "cml": ("CML", "configs/citeulike_t.py", (0.2714, 0.3411)),
    "cml_f": ("CML+F (tags)", "configs/citeulike_t_features.py", (0.3312, 0.4255)),
}
TARGETS = {"cml": (0.2714, 0.3411), "cml_f": (0.32, 0.42)}


def previous_runs():
    """Per-model runs and the command saved by an earlier sitting."""
    path = RESULTS / "citeulike_t.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    return saved.get("raw", {}), saved.get("command")


def table_row(key, runs):
    label, _, paper = MODELS[key]
    cells = [label, ",".join(str(r["seed"]) for r in runs)]
    for k, paper_value, target in zip((50, 100), paper, TARGETS[key]):
        med, low, high = median_spread([r["test"][f"recall@{k}"] for r in runs])
        mark = "meets" if med >= target else "BELOW"
        cells += [f"{med:.4f} ({low:.4f}–{high:.4f})", f"{paper_value:.4f}",
                  f"≥ {target:g} {mark}"]
    cells.append(f"{median_spread([r['train_seconds'] for r in runs])[0]:.0f}")
    return cells


def main(argv):
    del argv
    raw, command = previous_runs() if FLAGS.keep_other_models else ({}, None)
    if FLAGS.models or command is None:  # with --models= the table is only redrawn
        command = "python benchmarks/citeulike_t.py " + " ".join(sys.argv[1:])
    for key in FLAGS.models:
        label, config_path, _ = MODELS[key]
        raw[key] = []
        for seed in FLAGS.seeds:
            raw[key].append(run_seed(config_path, seed, SHARED_DATA / "citeulike-t"))
            test = raw[key][-1]["test"]
            print(f"{label} seed {seed}: test recall@50 {test['recall@50']:.4f} "
                  f"recall@100 {test['recall@100']:.4f} "
                  f"({raw[key][-1]['train_seconds']:.0f}s)", flush=True)
    rows = [table_row(key, raw[key]) for key in MODELS if key in raw]
    header = ["model", "seeds", "Recall@50 median (min–max)", "paper", "required",
              "Recall@100 median (min–max)", "paper", "required", "train s (median)"]
    write_table("citeulike_t", "CML and CML+F on citeulike-t, test set, r=100", header, rows,
                raw, command)


if __name__ == "__main__":
    app.run(main)
