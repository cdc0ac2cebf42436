"""Cold-start items on the user's-own-split path: CML+F on citeulike-t trained from split files
against the same split made by the project itself.

The project's own split of citeulike-t (``split_per_user``, seed 0) is written as
``train.csv``/``valid.csv``/``test.csv`` (user = line number of users.dat, item = item number),
and CML+F (``configs/citeulike_t_features.py``, model seed 0) is trained twice with
``cml_tf.train.train_and_evaluate``:

* *own split*: ``data.name=citeulike-t`` (the project splits the data itself);
* *split files*: ``data.train_path/valid_path/test_path`` = those files and
  ``data.features_from=citeulike-t`` (what a user with their own split runs). Every item with
  tags stays in the catalogue, also when all its interactions are held out.

Reported for both: test Recall@50/100 from metrics.json, Recall@50 through the run's exported
SavedModel (``serving_default``, an exact ``brute_force`` export with k=100: test items found in
the top 50 over the user's test items, unseen ones included), the catalogue size and how many
items had no training interaction. The issue's target: the files path within 1% of the own
split's test Recall@50.

    CML_TF_DATA=../shared/data python benchmarks/cold_start.py [--work_dir=DIR]
    CML_TF_DATA=../shared/data python benchmarks/cold_start.py --epochs=1 --out_dir=/tmp/x  # smoke

Writes benchmarks/results/cold_start.{md,json}. An accuracy figure: it may run on a loaded
machine (each run trains for a few minutes).
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "configs"))

import cml_tf  # noqa: I001,E402,F401  (first: routes tf.keras to Keras 2)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402

import citeulike_t_features  # noqa: E402
from cml_tf import train  # noqa: E402
from cml_tf.data.from_config import load_data  # noqa: E402

PARTS = ("train", "valid", "test")


def write_split(split, folder: pathlib.Path) -> dict:
    """The split's parts as user,item CSV files; returns their paths."""
    paths = {}
    for part in PARTS:
        matrix = getattr(split, part).matrix.tocoo()
        paths[part] = folder / f"{part}.csv"
        pd.DataFrame({"user": split.train.user_ids[matrix.row],
                      "item": split.train.item_ids[matrix.col]}).to_csv(paths[part], index=False)
    return paths


def served_recall(export_path: str, test: pd.DataFrame, k: int = 50) -> float:
    """Recall@k of the export's serving_default on the test pairs (raw ids), averaged over the
    test users: items the catalogue lacks count as misses."""
    model = tf.saved_model.load(export_path)
    users = sorted(set(test["user"]))
    found = {}
    for lo in range(0, len(users), 512):
        batch = users[lo:lo + 512]
        out = model.signatures["serving_default"](user_id=tf.constant(batch))
        for user, row in zip(batch, out["item_ids"].numpy()[:, :k]):
            found[user] = {b.decode() for b in row}
    held = test.groupby("user")["item"].apply(set)
    return float(np.mean([len(items & found[user]) / len(items) for user, items in held.items()]))


def run(name, config, workdir, test) -> dict:
    config.export.update(index="brute_force", k=100, report_users=200, report_queries=10)
    config.viz.enabled = False
    start = time.time()
    metrics = train.train_and_evaluate(config, str(workdir))
    row = {"run": name, "items": metrics["data"]["items"],
           "items_without_training_interactions":
               metrics["data"]["items_without_training_interactions"],
           "unseen_test_items": metrics["test"].get("unseen_items", 0),
           "test_recall@50": metrics["test"]["recall@50"],
           "test_recall@100": metrics["test"]["recall@100"],
           "served_recall@50": served_recall(metrics["export"]["path"], test),
           "epochs": metrics["epochs"], "best_epoch": metrics.get("best_epoch"),
           "seconds": time.time() - start}
    print(json.dumps(row), flush=True)
    return row


def markdown(rows, target) -> str:
    own, files = rows
    lines = ["# Cold-start items on the user's-own-split path (citeulike-t, CML+F)", "",
             "`configs/citeulike_t_features.py`, model seed 0, the project's own split (seed 0) "
             "and the same split given as files with `--config.data.features_from=citeulike-t`."
             " Recall over the test users; *served* = through the run's exported SavedModel "
             "(exact index, k=100).", "",
             "| run | items | items without a training interaction | unseen test items | "
             "test Recall@50 | test Recall@100 | served Recall@50 | epochs (best) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['items']:,} | {r['items_without_training_interactions']:,}"
                     f" | {r['unseen_test_items']:,} | {r['test_recall@50']:.4f} | "
                     f"{r['test_recall@100']:.4f} | {r['served_recall@50']:.4f} | "
                     f"{r['epochs']} ({r['best_epoch']}) |")
    gap = files["test_recall@50"] / own["test_recall@50"] - 1
    lines += ["", f"{'PASS' if abs(gap) <= target else 'MISS'}: split files test Recall@50 "
              f"{files['test_recall@50']:.4f} is {gap:+.1%} of the own split's "
              f"{own['test_recall@50']:.4f} (target: within {target:.0%}). Before the "
              "catalogue kept items without training interactions, the files path reached "
              "0.321 (issue 16)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=None, help="runs and split files (default: a "
                        "temporary folder)")
    parser.add_argument("--out_dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--epochs", type=int, default=None,
                        help="train this many epochs (default: the config's; for a quick check)")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="cml_tf_cold_start_"))
    work.mkdir(parents=True, exist_ok=True)

    def config():
        config = citeulike_t_features.get_config()
        config.train.verbose = 2
        if args.epochs:  # a quick check: export even a model below the popularity baseline
            config.train.epochs = args.epochs
            config.export.allow_untrained = True
        return config

    own_config = config()
    split = load_data(own_config.data)
    paths = write_split(split, work)
    test = pd.read_csv(paths["test"], dtype=str)
    rows = [run("own split", own_config, work / "own_split", test)]
    files_config = config()
    files_config.data.update(train_path=str(paths["train"]), valid_path=str(paths["valid"]),
                             test_path=str(paths["test"]))
    rows.append(run("split files", files_config, work / "split_files", test))

    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, target=0.01)
    (out / "cold_start.md").write_text(table)
    (out / "cold_start.json").write_text(json.dumps(
        {"rows": rows, "work_dir": str(work), "load_average_end": os.getloadavg()[0]}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
