"""CML and CML+F on citeulike-t with the paper's split: test Recall@50/100 beside the paper.

    python benchmarks/citeulike_t.py [--seeds=0,1,2] [--models=cml,cml_f]

Trains each model with its config (configs/citeulike_t.py, configs/citeulike_t_features.py:
settings chosen on the validation set) once per seed (the split stays seed 0; the seed changes
initialisation, sampling and batch order), and reports the median and the spread of the test
figures. Writes benchmarks/results/citeulike_t.{md,json}.
"""

import sys

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import app, flags

from common import SHARED_DATA, load_config, median_spread, run, write_table

flags.DEFINE_list("seeds", ["0", "1", "2"], "Model seeds.")
flags.DEFINE_list("models", ["cml", "cml_f"], "Which of cml, cml_f to train.")
FLAGS = flags.FLAGS

MODELS = {
    "cml": ("CML", "configs/citeulike_t.py", (0.2714, 0.3411)),
    "cml_f": ("CML+F (tags)", "configs/citeulike_t_features.py", (0.3312, 0.4255)),
}
TARGETS = {"cml": (0.2714, 0.3411), "cml_f": (0.32, 0.42)}


def main(argv):
    del argv
    data_dir = SHARED_DATA / "citeulike-t"
    rows, raw = [], {}
    for key in FLAGS.models:
        label, config_path, paper = MODELS[key]
        runs = []
        for seed in FLAGS.seeds:
            config = load_config(config_path)
            config.seed = int(seed)
            config.data.data_dir = str(data_dir)
            config.export.enabled = False
            config.train.verbose = 0
            metrics = run(config)
            runs.append({"seed": int(seed), "test": metrics["test"], "valid": metrics["valid"],
                         "epochs": metrics["epochs"], "best_epoch": metrics.get("best_epoch"),
                         "train_seconds": metrics["train_seconds"]})
            print(f"{label} seed {seed}: test recall@50 {metrics['test']['recall@50']:.4f} "
                  f"recall@100 {metrics['test']['recall@100']:.4f} "
                  f"({metrics['train_seconds']:.0f}s)", flush=True)
        raw[key] = runs
        cells = [label]
        for k, paper_value, target in zip((50, 100), paper, TARGETS[key]):
            med, low, high = median_spread([r["test"][f"recall@{k}"] for r in runs])
            mark = "meets" if med >= target else "BELOW"
            cells += [f"{med:.4f} ({low:.4f}–{high:.4f})", f"{paper_value:.4f}",
                      f"{target:.2f}+ {mark}"]
        cells.append(f"{median_spread([r['train_seconds'] for r in runs])[0]:.0f}")
        rows.append(cells)
    header = ["model", "Recall@50 median (min–max)", "paper", "required", "Recall@100 median "
              "(min–max)", "paper", "required", "train s (median)"]
    write_table("citeulike_t", f"citeulike-t, test set, r=100, seeds {','.join(FLAGS.seeds)}",
                header, rows, raw, "python benchmarks/citeulike_t.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    app.run(main)
