"""Every model tuned the same way: cml_tf.tune on validation, then the test set scored through
each final model's exported SavedModel.

    python benchmarks/tuned.py [--datasets=citeulike-t,movielens-1m-part] [--models=cml,...]
        [--budget_minutes=N] [--runs_dir=DIR] [--name=tuned]

Rows (data set x model), each its own study in ``<runs_dir>/<data set>/<model>/`` (a re-run
continues an unfinished study and skips a finished row, so the benchmark may span sessions):

* citeulike-t and movielens-1m-part: CML and CML+F (20 minutes each); WRMF, EASE and implicit's
  ALS (10 minutes each);
* citeulike-t: the hybrids FM, VBPR-MLP, CDL-MLP (10 minutes each).

implicit's ALS is the cross-check: the same Optuna search over the WRMF space (factors,
regularization, alpha), its training length chosen on validation like ours, its factors
exported through a WRMF model (dot products, the same signatures). Each final model is loaded
with ``tf.saved_model.load`` from ``final/saved_model/<version>/`` and every test user is scored
through ``serving_default`` (k >= 100; the export excludes train and validation items, the
test protocol's exclusions), then Recall@50/@100 and NDCG@50 are computed by cml_tf.metrics;
the exact figures of the final run's metrics.json stand beside them.

Writes benchmarks/results/<name>.{md,json} after every row; rows recorded there by an earlier
run and not selected by this one stay in the table as they were (so the rows may be run in
parts, and a lost ``runs_dir`` loses no finished row). Budgets are wall clock: run it alone on
the machine. ``--datasets=synthetic --budget_minutes=0.5`` checks the script quickly.
"""

import json
import pathlib
import sys
import time
import types

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
from absl import app, flags, logging

from common import REPO, RESULTS, SHARED_DATA, load_config, write_table

DATASETS = ("citeulike-t", "movielens-1m-part")
# model key: (label, config file, budget minutes, data sets; None = every data set)
MODELS = {
    "cml": ("CML", "configs/citeulike_t.py", 20, None),
    "cml_f": ("CML+F", "configs/citeulike_t_features.py", 20, None),
    "wrmf": ("WRMF", "configs/citeulike_t/wrmf.py", 10, None),
    "ease": ("EASE", "configs/citeulike_t/ease.py", 10, None),
    "als": ("implicit ALS", "configs/citeulike_t/wrmf.py", 10, None),
    "fm": ("FM", "configs/citeulike_t/fm.py", 10, ("citeulike-t", "synthetic")),
    "vbpr": ("VBPR-MLP", "configs/citeulike_t/vbpr.py", 10, ("citeulike-t", "synthetic")),
    "cdl": ("CDL-MLP", "configs/citeulike_t/cdl.py", 10, ("citeulike-t", "synthetic")),
}
# A data set's own starting config where one was chosen on its validation set (every study
# searches from its start the same way; the rest start from citeulike-t's).
OWN_CONFIGS = {("movielens-1m-part", "cml"): "configs/movielens_1m.py",
               ("movielens-1m-part", "cml_f"): "configs/movielens_1m_features.py",
               ("movielens-1m-part", "ease"): "configs/movielens_1m/ease.py"}
COLLABORATIVE = ("wrmf", "als", "ease")   # tuned CML must match or beat these at Recall@50
HYBRIDS = ("fm", "vbpr", "cdl")           # tuned CML+F must match or beat these at @50, @100

flags.DEFINE_list("datasets", list(DATASETS), "citeulike-t, movielens-1m-part, synthetic.")
flags.DEFINE_list("models", list(MODELS), "Rows to run, of: " + ", ".join(MODELS))
flags.DEFINE_float("budget_minutes", None, "Replace every row's budget (a quick check).")
flags.DEFINE_string("runs_dir", str(RESULTS / "tmp" / "tuned"), "Where the studies live.")
flags.DEFINE_string("name", "tuned", "Result file name under benchmarks/results/.")
FLAGS = flags.FLAGS


# ---- configs ---------------------------------------------------------------------------------

def row_config(dataset, model):
    """The config of a row: the model's config for ``dataset`` (OWN_CONFIGS) or else its
    citeulike-t config on ``dataset``; export on (ScaNN, k = 100), pictures off."""
    config = load_config(OWN_CONFIGS.get((dataset, model), MODELS[model][1]))
    data = config.data
    if dataset == "synthetic":
        data.name = "synthetic"
    elif dataset == "citeulike-t":
        data.name, data.data_dir = "citeulike-t", str(SHARED_DATA / "citeulike-t")
    else:  # the ml-1m prefix; genres are its item features
        data.name, data.data_dir = "movielens-1m", str(SHARED_DATA / dataset)
        data.features_from = ""
    data.download = False
    config.train.verbose = 0
    config.viz.enabled = False
    config.export.k = max(config.export.k, 100)
    return config


# ---- implicit's ALS with train_and_evaluate's contract ---------------------------------------

class _StopFit(Exception):
    """Ends implicit's fit loop early (time limit)."""


def implicit_als(config, workdir, overwrite=False, skip_test=False, callbacks=()):
    """train_and_evaluate for implicit's ALS: the WRMF config's dim / regularization / alpha,
    train.epochs iterations with validation (train.valid_users) every train.eval_every (the
    callbacks see ``val_<monitor>``), the best iteration's factors kept; all cores, as
    TensorFlow uses. The
    factors sit in a WRMF model, which evaluates and exports them like cml_tf's own."""
    # pylint: disable=import-outside-toplevel
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from cml_tf import export, train, workdir as workdir_lib
    from cml_tf.callbacks import validation_users
    from cml_tf.data.from_config import load_data
    from cml_tf.evaluation import evaluate
    from cml_tf.models import build_model

    run = workdir_lib.prepare(workdir, config.to_json_best_effort(sort_keys=True, indent=2),
                              overwrite)
    workdir = run.path
    split = load_data(config.data)
    train.check_config(config, split)
    holder = build_model(config.model, split.train, seed=config.seed)
    m = config.model
    als = AlternatingLeastSquares(factors=m.dim, regularization=m.regularization, alpha=m.alpha,
                                  iterations=config.train.epochs, random_state=config.seed,
                                  num_threads=0)
    keras_model = types.SimpleNamespace(stop_training=False)
    for callback in callbacks:
        callback.set_model(keras_model)
    monitor, ks, every = config.train.monitor, tuple(config.eval.ks), config.train.eval_every
    users = validation_users(split, config.train.valid_users, seed=config.data.split_seed)
    history, best = [], {"value": -1.0}

    def load(user_factors, item_factors):
        holder.user_factors.assign(np.asarray(user_factors, np.float32))
        holder.item_factors.assign(np.asarray(item_factors, np.float32))

    def after_iteration(iteration, elapsed, loss):
        done = iteration + 1
        logs = {}
        if done % every == 0 or done == config.train.epochs:
            load(als.user_factors, als.item_factors)
            metrics = evaluate(holder, split, "valid", ks, users=users)
            history.append({"epoch": done, **{k: v for k, v in metrics.items() if "@" in k}})
            logs[f"val_{monitor}"] = metrics[monitor]
            if metrics[monitor] > best["value"]:
                best.update(value=metrics[monitor], epoch=done, users=als.user_factors.copy(),
                            items=als.item_factors.copy())
        for callback in callbacks:
            callback.on_epoch_end(iteration, logs)
        if keras_model.stop_training:
            raise _StopFit

    start = time.time()
    try:  # implicit parallelises itself and asks BLAS for one thread
        with threadpool_limits(1, "blas"):
            als.fit(split.train.matrix, show_progress=False, callback=after_iteration)
    except _StopFit:
        pass
    train_seconds = time.time() - start
    load(best["users"], best["items"])
    epochs = history[-1]["epoch"]
    result = {"epochs": epochs, "best_epoch": best["epoch"], "validation_history": history,
              "train_seconds": train_seconds,
              "train_pairs_per_second": split.train.n_interactions * epochs / train_seconds,
              "valid": evaluate(holder, split, "valid", ks, users=users)}
    if not skip_test:
        result["test"] = evaluate(holder, split, "test", ks)
        if config.export.enabled:
            result["export"] = export.export_from_training(holder, split, config, workdir)
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    run.started()  # a run replaced by overwrite goes once this one is complete
    return result


# ---- scoring through the SavedModel ---------------------------------------------------------

class ServedScores:
    """``score(users)`` from the exported ``serving_default``: its k items get scores k, k-1,
    ... in its order, every other item -inf, so cml_tf's metrics rank exactly what it served."""

    def __init__(self, signature, split):
        self.signature, self.split = signature, split
        self.k = int(signature.structured_outputs["item_ids"].shape[1])
        self.position = {item: i for i, item in enumerate(split.train.item_ids)}

    def score(self, users):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        users = np.asarray(users)
        out = self.signature(user_id=tf.constant(self.split.train.user_ids[users]))
        ids = out["item_ids"].numpy().astype(str)
        scores = np.full((len(users), self.split.train.n_items), -np.inf, np.float32)
        for row, items in enumerate(ids):
            for rank, item in enumerate(items):
                if item:  # "" marks an empty slot
                    scores[row, self.position[item]] = self.k - rank
        return scores


def served_test_metrics(final_dir):
    """Test Recall@50/@100, NDCG@50 of the final run's SavedModel (its newest version)."""
    # pylint: disable=import-outside-toplevel
    import ml_collections
    import scann  # noqa: F401  (registers ScaNN's ops for a ScaNN index)
    import tensorflow as tf

    from cml_tf.data.from_config import load_data
    from cml_tf.evaluation import evaluate

    config = ml_collections.ConfigDict(json.loads((final_dir / "config.json").read_text()))
    split = load_data(config.data)
    versions = sorted((p for p in (final_dir / "saved_model").iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name))
    served = tf.saved_model.load(str(versions[-1]))
    scores = ServedScores(served.signatures["serving_default"], split)
    if scores.k < 100:
        raise ValueError(f"{versions[-1]} serves k={scores.k}; Recall@100 needs k >= 100")
    metrics = evaluate(scores, split, "test", (50, 100), batch_size=256)
    return {"path": str(versions[-1]), "k": scores.k,
            **{key: metrics[key] for key in ("recall@50", "recall@100", "ndcg@50", "users")}}


# ---- rows ------------------------------------------------------------------------------------

def run_row(dataset, model, runs_dir):
    """Tunes one row (or continues it) and scores its final model; the record is kept in
    ``<row>/row.json`` so a finished row is not run again."""
    from cml_tf.tune import tune  # pylint: disable=import-outside-toplevel
    label, config_file, minutes, _ = MODELS[model]
    row_dir = runs_dir / dataset / model
    record_file = row_dir / "row.json"
    if record_file.exists():
        return json.loads(record_file.read_text())
    if not (REPO / config_file).exists():
        return {"status": f"not run: {config_file} does not exist"}
    budget = FLAGS.budget_minutes or minutes
    config = row_config(dataset, model)
    start = time.time()
    result = tune(config, str(row_dir / "study"), budget_minutes=budget,
                  trainer=implicit_als if model == "als" else None)
    final = result["final"]
    record = {"status": "done", "label": label, "budget_minutes": budget,
              "study_seconds": result["study_seconds"], "trials": result["trials"],
              "best": result["best"], "final_train_seconds": final["train_seconds"],
              "exact_test": {k: final["test"][k] for k in ("recall@50", "recall@100",
                                                           "ndcg@50")},
              "served_test": served_test_metrics(pathlib.Path(result["final_workdir"])),
              "session_seconds": time.time() - start,
              "command": "python benchmarks/tuned.py " + " ".join(sys.argv[1:])}
    record_file.write_text(json.dumps(record, indent=2))
    return record


def _trials(record):
    return ", ".join(f"{n} {state}" for state, n in record["trials"].items())


def table(raw, datasets):
    rows = []
    for dataset in datasets:
        for model, record in raw.get(dataset, {}).items():
            label = MODELS[model][0]
            if record.get("status") != "done":
                rows.append([dataset, label, record.get("status", "not run")[:200]] + [""] * 7)
                continue
            served, exact = record["served_test"], record["exact_test"]
            rows.append([dataset, label, f"{served['recall@50']:.4f}",
                         f"{served['recall@100']:.4f}", f"{served['ndcg@50']:.4f}",
                         f"{exact['recall@50']:.4f} / {exact['recall@100']:.4f}",
                         f"{record['best']['value']:.4f}",
                         f"{record['study_seconds'] / 60:.1f} of {record['budget_minutes']:g}",
                         _trials(record), ", ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                                    else f"{k}={v}" for k, v in
                                                    record["best"]["params"].items())])
    return rows


def targets(raw, datasets) -> list:
    """The issue's targets on test (served figures): one line each, met or missed by how
    much."""
    def value(dataset, model, k):
        record = raw.get(dataset, {}).get(model, {})
        return record["served_test"][f"recall@{k}"] if record.get("status") == "done" else None

    lines = []
    for dataset in datasets:
        for ours, others, ks in (("cml", COLLABORATIVE, (50,)), ("cml_f", HYBRIDS, (50, 100))):
            if dataset == "movielens-1m-part" and ours == "cml_f":
                continue
            for other in others:
                if other in HYBRIDS and dataset not in MODELS[other][3]:
                    continue
                for k in ks:
                    a, b = value(dataset, ours, k), value(dataset, other, k)
                    name = f"{dataset}: tuned {MODELS[ours][0]} >= {MODELS[other][0]} at R@{k}"
                    if a is None or b is None:
                        lines.append(f"- {name}: not run")
                    else:
                        verdict = "met" if a >= b else (
                            f"MISSED by {b - a:.4f} ({100 * (b / a - 1):.1f}%)")
                        lines.append(f"- {name}: {a:.4f} vs {b:.4f}, {verdict}")
        for model, record in raw.get(dataset, {}).items():
            if record.get("status") == "done":
                within = record["study_seconds"] <= record["budget_minutes"] * 60 + 30
                lines.append(f"- {dataset}: {MODELS[model][0]} within its "
                             f"{record['budget_minutes']:g}-minute budget: "
                             f"{'yes' if within else 'NO'} ({record['study_seconds'] / 60:.1f})")
    return lines


def recorded_rows() -> dict:
    """The rows of an earlier run's ``<name>.json`` ({} when there is none)."""
    path = RESULTS / f"{FLAGS.name}.json"
    return json.loads(path.read_text()).get("raw", {}) if path.exists() else {}


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    runs_dir = pathlib.Path(FLAGS.runs_dir)
    raw = recorded_rows()
    for dataset in FLAGS.datasets:
        for model in FLAGS.models:
            if model not in MODELS:
                raise app.UsageError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
            sets = MODELS[model][3]
            if sets is not None and dataset not in sets:
                continue
            try:
                raw.setdefault(dataset, {})[model] = run_row(dataset, model, runs_dir)
            except Exception as error:  # pylint: disable=broad-except  (a row, not the table)
                logging.exception("%s / %s failed", dataset, model)
                raw.setdefault(dataset, {})[model] = {"status": f"failed: {error}"}
            _write(raw)
    _write(raw)


def _write(raw):
    header = ["data set", "model", "test R@50 (served)", "R@100", "NDCG@50",
              "exact R@50 / R@100", "valid (best trial)", "tuning min", "trials", "best params"]
    command = "python benchmarks/tuned.py " + " ".join(sys.argv[1:])
    (RESULTS / FLAGS.name).parent.mkdir(parents=True, exist_ok=True)
    write_table(FLAGS.name, "Every model tuned by cml_tf.tune (validation only), test scored "
                "through its exported SavedModel", header, table(raw, datasets), raw, command)
    lines = targets(raw, datasets)
    path = RESULTS / f"{FLAGS.name}.md"
    path.write_text(path.read_text() + "\nTargets (test, served figures):\n\n" + "\n".join(lines)
                    + "\n")


if __name__ == "__main__":
    app.run(main)
