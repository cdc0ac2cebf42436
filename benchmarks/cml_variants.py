"""Variants of CML measured on the VALIDATION sets of citeulike-t, movielens-1m-part and the
synthetic data: which of the options in cml_tf/models/cml.py help, and by how much.

    python benchmarks/cml_variants.py                          # every variant, seed 0
    python benchmarks/cml_variants.py --seeds=1,2 --variants=baseline,lambda_item_0.3

Each variant changes the data set's own config (configs/citeulike_t.py, configs/movielens_1m.py
on ../shared/data/movielens-1m-part, configs/default.py) by the overrides below, trains it once
per seed with train_and_evaluate(skip_test=True) -- the test set is never evaluated -- and keeps
the best validation Recall@50 / @100 / NDCG@50 of the run (best weights restored, early stopping
as the config says). The split is always split seed 0; the seed changes initialisation, sampling
and batch order. Figures are medians over the seeds run; the table says how many.

Resumable per run: each finished (variant, data set, seed) is stored in
benchmarks/results/cml_variants.json at once and skipped by the next invocation; the Markdown
table benchmarks/results/cml_variants.md is rewritten from all stored runs after each one.
Runs take a few minutes each on 2 cores. Each run records the machine's load average when it
starts and ends; the table marks the seconds of a run taken with other jobs on the machine (or
whose load was not recorded) with a dagger: its validation figures stand (the same seed makes the
same draws whatever the load), its seconds are not a timing figure.
"""

import json
import math
import os
import statistics
import sys
import time

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import app, flags, logging

from common import RESULTS, SHARED_DATA, quiet_config, run

flags.DEFINE_list("seeds", ["0"], "Model seeds.")
flags.DEFINE_list("variants", [], "Variants to run (default: all).")
flags.DEFINE_list("datasets", [], "Data sets to run (default: all).")
flags.DEFINE_bool("table_only", False, "Rewrite the table from the stored runs; train nothing.")
FLAGS = flags.FLAGS

NAME = "cml_variants"
DATASETS = {
    "citeulike-t": ("configs/citeulike_t.py", SHARED_DATA / "citeulike-t"),
    "movielens-1m-part": ("configs/movielens_1m.py", SHARED_DATA / "movielens-1m-part"),
    "synthetic": ("configs/default.py", None),
}
METRICS = ("recall@50", "recall@100", "ndcg@50")


def times(factor):
    return lambda value: type(value)(value * factor)


# Every variant starts from the data set's config with these set: the paper's sampling and loss
# and a constant rate, as the configs were when the runs started (cml_tf/config.py now turns
# on the item-centric term and the decay because of this table).
BASELINE = {"model.sampling": "uniform", "model.lambda_item": 0.0, "train.lr_decay": 0.0}

# name -> (what it is, {config key: value or function of the config's value}).
VARIANTS = {
    "baseline": ("the data set's config with uniform sampling, no item-centric term, a "
                 "constant rate", {}),
    "popularity_0.25": ("U draws from (n_k + 1)^0.25", {
        "model.sampling": "popularity", "model.sampling_beta": 0.25}),
    "popularity_0.5": ("U draws from (n_k + 1)^0.5", {
        "model.sampling": "popularity", "model.sampling_beta": 0.5}),
    "popularity_1": ("U draws from (n_k + 1)^1", {
        "model.sampling": "popularity", "model.sampling_beta": 1.0}),
    "two_stage_64_0.5": ("pool of 64 draws from (n_k + 1)^0.5 per batch, hardest per pair", {
        "model.sampling": "two_stage", "model.candidates": 64, "model.sampling_beta": 0.5}),
    "two_stage_256_0.5": ("pool of 256, beta 0.5", {
        "model.sampling": "two_stage", "model.candidates": 256, "model.sampling_beta": 0.5}),
    "two_stage_64_0": ("pool of 64 uniform draws", {
        "model.sampling": "two_stage", "model.candidates": 64, "model.sampling_beta": 0.0}),
    "two_stage_256_0": ("pool of 256 uniform draws", {
        "model.sampling": "two_stage", "model.candidates": 256, "model.sampling_beta": 0.0}),
    "lambda_item_0.1": ("item-centric term, weight 0.1", {"model.lambda_item": 0.1}),
    "lambda_item_0.3": ("item-centric term, weight 0.3", {"model.lambda_item": 0.3}),
    "lambda_item_1": ("item-centric term, weight 1", {"model.lambda_item": 1.0}),
    "negatives_half": ("U / 2", {"model.num_negatives": times(0.5)}),
    "negatives_x2": ("U x 2", {"model.num_negatives": times(2)}),
    "negatives_x2_batch_x4": ("U x 2, batch x 4, learning rate x 2", {
        "model.num_negatives": times(2), "train.batch_size": times(4),
        "train.learning_rate": times(2)}),
    "lr_decay_0.9": ("cosine decay to 0.1 x the learning rate over train.epochs", {
        "train.lr_decay": 0.9}),
    "lr_x2_decay_0.9": ("learning rate x 2, cosine decay to 0.2 x the base rate", {
        "train.learning_rate": times(2), "train.lr_decay": 0.9}),
    "lambda_item_0.1_lr_decay_0.9": ("item-centric term 0.1 and the cosine decay to 0.1x", {
        "model.lambda_item": 0.1, "train.lr_decay": 0.9}),
    "margin_1": ("m = 1.0", {"model.margin": 1.0}),
    "margin_2": ("m = 2.0", {"model.margin": 2.0}),
    "dim_50": ("r = 50", {"model.dim": 50}),
    "dim_200": ("r = 200", {"model.dim": 200}),
}

# A run's own training keeps about 2 of the machine's 2 cores busy: a 1-minute load average
# above this, at its start or end, means other jobs shared them.
LOADED = 2.5

# What was concluded from the figures (written by hand after reading them; see the module doc).
LOST = "no: lost on all three"
NOTES = {
    "baseline": "the reference",
    "popularity_0.25": LOST, "popularity_0.5": LOST, "popularity_1": LOST,
    "two_stage_64_0.5": LOST, "two_stage_256_0.5": LOST, "two_stage_64_0": LOST,
    "two_stage_256_0": LOST + " (a larger pool lost more)",
    "lambda_item_0.1": "yes, with the decay (below)",
    "lambda_item_0.3": "no: no better than 0.1 (in the tuner's range)",
    "lambda_item_1": "no: lost on citeulike-t and movielens-1m-part",
    "negatives_half": "no: lost on citeulike-t and movielens-1m-part",
    "negatives_x2": "no: lost on movielens-1m-part and synthetic",
    "negatives_x2_batch_x4": LOST,
    "lr_decay_0.9": "yes, with the item-centric term (below)",
    "lr_x2_decay_0.9": "no: no better than the decay at the config's rate",
    "lambda_item_0.1_lr_decay_0.9": "**yes: the defaults of cml_tf/config.py** (never a loss; "
                                    "configs/citeulike_t.py keeps both off, neutral there)",
    "margin_1": "no: lost 0.033 on citeulike-t",
    "margin_2": "no: lost on citeulike-t and movielens-1m-part",
    "dim_50": "no: r = 100 stays (lost on citeulike-t)",
    "dim_200": "no: lost on movielens-1m-part",
}
SUMMARY = (
    "What the defaults took from this (cml_tf/config.py says it next to each key): uniform "
    "sampling stays; the item-centric term at 0.1 and the cosine decay to 0.1x together are "
    "on by default (`model.lambda_item = 0.1`, `train.lr_decay = 0.9`), the one combination "
    "run at two seeds that never lost; citeulike-t's CML config, whose Table 2 figures were "
    "measured with neither, keeps both off because they were neutral there (its seed-to-seed "
    "spread is 0.002). Popularity and two-stage sampling stay options the tuner may choose "
    "(two-stage is left out of the default search space, see `config.tune.space.cml`).")


def configure(dataset, variant, seed):
    path, data_dir = DATASETS[dataset]
    config = quiet_config(path, data_dir)
    if data_dir is None:
        config.data.data_dir = ""
    config.seed = int(seed)
    for key, value in {**BASELINE, **VARIANTS[variant][1]}.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value(node[leaf]) if callable(value) else value
    return config


def load_runs():
    path = RESULTS / f"{NAME}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else {}


def save_runs(runs):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{NAME}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"command": "python benchmarks/cml_variants.py",
                               "variants": {k: v[0] for k, v in VARIANTS.items()},
                               "runs": runs}, indent=2, default=float))
    os.replace(tmp, path)


def run_one(dataset, variant, seed):
    config = configure(dataset, variant, seed)
    start, load = time.time(), os.getloadavg()[0]
    metrics = run(config, skip_test=True)  # the test set is never evaluated
    return {"dataset": dataset, "variant": variant, "seed": int(seed),
            "valid": {k: metrics["valid"][k] for k in METRICS},
            "epochs": metrics["epochs"], "best_epoch": metrics.get("best_epoch"),
            "train_seconds": metrics["train_seconds"], "wall_seconds": time.time() - start,
            "load_average": [load, os.getloadavg()[0]]}


def loaded(record):
    """Whether other jobs shared the machine during the run (unknown counts as loaded)."""
    return max(record.get("load_average") or [math.inf]) > LOADED


def medians(runs, dataset, variant):
    chosen = [r for r in runs.values() if r["dataset"] == dataset and r["variant"] == variant]
    if not chosen:
        return None
    return {"n": len(chosen), "by_seed": {r["seed"]: r["valid"]["recall@50"] for r in chosen},
            **{k: statistics.median(r["valid"][k] for r in chosen) for k in METRICS},
            "train_seconds": statistics.median(r["train_seconds"] for r in chosen),
            "loaded": any(loaded(r) for r in chosen),
            "best_epoch": statistics.median(r["best_epoch"] or 0 for r in chosen)}


def cell(stats, base):
    """A table cell; the change is paired: the median over the variant's seeds of its Recall@50
    minus the baseline's at the same seed (seeds the baseline did not run are left out)."""
    if stats is None:
        return "—"
    text = f"{stats['recall@50']:.4f}"
    seeds = sorted(set(stats["by_seed"]) & set(base["by_seed"])) if base else []
    if base is not None and base is not stats and seeds:
        change = statistics.median(stats["by_seed"][s] - base["by_seed"][s] for s in seeds)
        text += f" ({change:+.4f})"
    dagger = "†" if stats["loaded"] else ""
    return (f"{text} / {stats['recall@100']:.4f} / {stats['ndcg@50']:.4f}, "
            f"{stats['train_seconds']:.0f} s{dagger}, n={stats['n']}")


def write_markdown(runs):
    datasets = list(DATASETS)
    lines = [
        "# CML variants on the validation sets",
        "",
        "Command: `python benchmarks/cml_variants.py [--seeds=...] [--variants=...]` "
        "(resumes per run; `--table_only` rewrites this file).",
        "",
        "Each cell: validation Recall@50 (change against the baseline at the same seeds) / "
        "Recall@100 / NDCG@50, median over the n seeds run (model seeds 0, 1, 2, ...; split "
        "seed 0), and the median training seconds (steps only). Best validation epoch's "
        "weights; test never evaluated.",
        "",
        "† = measured on a loaded machine: the 2-core machine was shared with other jobs "
        f"(1-minute load average above {LOADED} at the run's start or end) or the load was not "
        "recorded (every run before the load was logged; those seconds varied up to 5x per "
        "epoch for the same per-step cost). The validation figures of such a run stand, its "
        "seconds are not a timing figure. Only unmarked seconds were taken on an idle machine.",
        "Configs: " + "; ".join(f"{d}: `{DATASETS[d][0]}`" for d in datasets) + ".",
        "",
        "| variant | what | " + " | ".join(datasets) + " | kept? |",
        "|---|---|" + "---|" * len(datasets) + "---|",
    ]
    for variant, (what, _) in VARIANTS.items():
        stats = [medians(runs, d, variant) for d in datasets]
        if all(s is None for s in stats):
            continue
        bases = [medians(runs, d, "baseline") for d in datasets]
        cells = [cell(s, None if variant == "baseline" else b) for s, b in zip(stats, bases)]
        lines.append(f"| `{variant}` | {what} | " + " | ".join(cells) + " | "
                     + NOTES.get(variant, "") + " |")
    lines += ["", SUMMARY]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{NAME}.md").write_text(text)
    return text


def main(argv):
    del argv
    unknown = set(FLAGS.variants) - set(VARIANTS) | set(FLAGS.datasets) - set(DATASETS)
    if unknown:
        print(f"error: unknown variants or data sets: {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 1
    runs = load_runs()
    if not FLAGS.table_only:
        for variant in FLAGS.variants or VARIANTS:
            for dataset in FLAGS.datasets or DATASETS:
                for seed in FLAGS.seeds:
                    key = f"{variant}|{dataset}|{seed}"
                    if key in runs:
                        continue
                    logging.info("run %s", key)
                    runs[key] = run_one(dataset, variant, seed)
                    logging.info("%s: %s", key, runs[key]["valid"])
                    save_runs(runs)
                    write_markdown(runs)
    print(write_markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
