"""The paper's Table 2, CiteULike rows, reproduced by the model zoo on citeulike-t.

    python benchmarks/table2.py [--seeds=0,1,2] [--models=wrmf,bpr,...] [--crosscheck=true]

Trains all eight models -- WRMF, BPR, WARP, CML (configs/citeulike_t.py) and FM, VBPR, CDL,
CML+F (configs/citeulike_t_features.py), the baselines from configs/citeulike_t/<model>.py, all
tuned on the validation set only -- and EASE (not in the paper: no paper column; its closed
form does not depend on the seed, so its seeds repeat one figure) with the default split (split
seed 0) once per seed (the seed changes initialisation, sampling and batch order), and prints
test Recall@50 / Recall@100 as the median and the spread (min-max) of the seeds beside the
paper's figures.

With the ``bench`` extra installed (``pip install -e ".[bench]"``; LightFM may need
``pip install --no-build-isolation lightfm``) it adds cross-check columns computed on the
identical split and the same evaluation code: ``implicit``'s ALS (100 factors, alpha 40,
regularisation 0.01, 15 iterations: the WRMF config's setting) and BPR, LightFM's WARP and BPR,
and LightFM's WARP with item-identity + tag features (the FM of the paper, which used LightFM).
The libraries' training length is chosen on the validation set as ours (best validation
Recall@50 over evaluations every few epochs); their other settings are their defaults with
100 factors. Every run is single-threaded.

Writes benchmarks/results/table2.{md,json} (and ``<name>.partial.json`` after every model).
A table can be assembled from runs made in several sittings without training again:

    python benchmarks/table2.py --models=wrmf,bpr,warp,fm,cdl,vbpr --name=table2_baselines
    python benchmarks/table2.py --models=cml,cml_f --name=table2_cml \
        --crosscheck_json=benchmarks/results/table2_baselines.json
    python benchmarks/table2.py --ours_json=benchmarks/results/table2_baselines.json,\
benchmarks/results/table2_cml.json --crosscheck_json=benchmarks/results/table2_baselines.json
"""

import json
import pathlib
import sys
import time

import cml_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from absl import app, flags, logging

from common import REPO, SHARED_DATA, load_config, median_spread, run_seed, write_table

flags.DEFINE_list("seeds", ["0", "1", "2"], "Model seeds.")
flags.DEFINE_list("models", ["wrmf", "bpr", "warp", "cml", "ease", "fm", "vbpr", "cdl", "cml_f"],
                  "Which models to train.")
flags.DEFINE_boolean("crosscheck", True, "Add the implicit / LightFM columns when installed.")
flags.DEFINE_boolean("crosscheck_only", False, "Only the cross-check libraries (no training of "
                     "ours).")
flags.DEFINE_string("crosscheck_json", "", "Take the cross-check runs from this earlier result "
                    "JSON (benchmarks/results/<name>.json) instead of running them.")
flags.DEFINE_list("ours_json", [], "Take our models' runs from these earlier result JSONs "
                  "(benchmarks/results/<name>.json or .partial.json; merged by model and seed, a "
                  "later file's run of a seed replacing an earlier's) instead of training them: a "
                  "table assembled from runs made in several sittings.")
flags.DEFINE_string("name", "table2", "Result file name under benchmarks/results/.")
FLAGS = flags.FLAGS

# key: (label, config file, paper (Recall@50, Recall@100) or None, group). EASE (Steck, WWW 2019)
# is not in the paper; it stands here as the strongest simple item-item baseline.
MODELS = {
    "wrmf": ("WRMF", "configs/citeulike_t/wrmf.py", (0.2437, 0.3112), "cf"),
    "bpr": ("BPR", "configs/citeulike_t/bpr.py", (0.2489, 0.3296), "cf"),
    "warp": ("WARP", "configs/citeulike_t/warp.py", (0.1916, 0.2526), "cf"),
    "cml": ("CML", "configs/citeulike_t.py", (0.2714, 0.3411), "cf"),
    "ease": ("EASE", "configs/citeulike_t/ease.py", None, "cf"),
    "fm": ("FM", "configs/citeulike_t/fm.py", (0.1668, 0.2166), "hybrid"),
    "vbpr": ("VBPR-MLP", "configs/citeulike_t/vbpr.py", (0.2807, 0.3437), "hybrid"),
    "cdl": ("CDL-MLP", "configs/citeulike_t/cdl.py", (0.3375, 0.4173), "hybrid"),
    "cml_f": ("CML+F", "configs/citeulike_t_features.py", (0.3312, 0.4255), "hybrid"),
}
# Which cross-check columns stand beside which model.
CROSSCHECKS = {"wrmf": ["implicit ALS"], "bpr": ["implicit BPR", "LightFM BPR"],
               "warp": ["LightFM WARP"], "fm": ["LightFM FM"]}


# ---- the cross-check libraries -----------------------------------------------------------------


class _Scorer:
    """``score(users)`` from user/item factor arrays (dot product), for cml_tf's evaluation."""

    def __init__(self, users, items):
        self.users, self.items = tf.constant(users, tf.float32), tf.constant(items, tf.float32)

    def score(self, users):
        return tf.matmul(tf.gather(self.users, users), self.items, transpose_b=True)


def _best_by_validation(step, snapshot, split, rounds):
    """Runs ``step()`` ``rounds`` times; after each, validation Recall@50 of ``snapshot()``
    (a _Scorer); returns (best scorer, its round, validation history)."""
    from cml_tf.evaluation import evaluate  # pylint: disable=import-outside-toplevel
    best, best_value, best_round, history = None, -1.0, 0, []
    for round_ in range(1, rounds + 1):
        step()
        scorer = snapshot()
        value = evaluate(scorer, split, "valid", (50,))["recall@50"]
        history.append(round(value, 4))
        if value > best_value:
            best, best_value, best_round = scorer, value, round_
    return best, best_round, history


def implicit_als(split, seed):
    from implicit.als import AlternatingLeastSquares  # pylint: disable=import-outside-toplevel
    model = AlternatingLeastSquares(factors=100, alpha=40.0, regularization=0.01, iterations=15,
                                    random_state=seed, num_threads=1)
    model.fit(split.train.matrix, show_progress=False)
    return _Scorer(model.user_factors, model.item_factors), {"iterations": 15}


def implicit_bpr(split, seed, step_iterations=25, rounds=12):
    from implicit.bpr import BayesianPersonalizedRanking  # pylint: disable=import-outside-toplevel
    model = BayesianPersonalizedRanking(factors=100, iterations=step_iterations,
                                        random_state=seed, num_threads=1)
    best, best_round, history = _best_by_validation(
        lambda: model.fit(split.train.matrix, show_progress=False),  # continues from the factors
        lambda: _Scorer(np.array(model.user_factors), np.array(model.item_factors)),
        split, rounds)
    return best, {"iterations": best_round * step_iterations, "valid_history": history}


def lightfm(split, seed, loss, features=False, step_epochs=5, rounds=12):
    from lightfm import LightFM  # pylint: disable=import-outside-toplevel
    train = split.train
    item_features = None
    if features:  # LightFM's hybrid: item identity + tags, rows normalised to sum 1
        raw = sp.hstack([sp.identity(train.n_items, format="csr"),
                         (train.item_features > 0).astype(np.float32)]).tocsr()
        item_features = sp.diags(1.0 / np.asarray(raw.sum(axis=1)).ravel()) @ raw
        item_features = sp.csr_matrix(item_features, dtype=np.float32)
    model = LightFM(no_components=100, loss=loss, random_state=seed)
    interactions = sp.coo_matrix(train.matrix)

    def snapshot():
        item_bias, item_vectors = model.get_item_representations(item_features)
        _, user_vectors = model.get_user_representations()
        return _Scorer(np.hstack([user_vectors, np.ones((train.n_users, 1), np.float32)]),
                       np.hstack([item_vectors, item_bias[:, None]]))

    best, best_round, history = _best_by_validation(
        lambda: model.fit_partial(interactions, item_features=item_features,
                                  epochs=step_epochs, num_threads=1),
        snapshot, split, rounds)
    return best, {"epochs": best_round * step_epochs, "valid_history": history}


LIBRARIES = {
    "implicit ALS": ("implicit", implicit_als),
    "implicit BPR": ("implicit", implicit_bpr),
    "LightFM BPR": ("lightfm", lambda split, seed: lightfm(split, seed, "bpr")),
    "LightFM WARP": ("lightfm", lambda split, seed: lightfm(split, seed, "warp")),
    "LightFM FM": ("lightfm", lambda split, seed: lightfm(split, seed, "warp", features=True)),
}


def _installed(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def run_crosscheck(name, seeds):
    """Test Recall@50/100 of a library on the identical split, one run per seed."""
    from cml_tf.evaluation import evaluate  # pylint: disable=import-outside-toplevel
    from cml_tf.data.from_config import load_data  # pylint: disable=import-outside-toplevel
    from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
    module, fit = LIBRARIES[name]
    if not _installed(module):
        return None
    config = load_config("configs/citeulike_t/fm.py")  # citeulike-t with tag features
    config.data.data_dir = str(SHARED_DATA / "citeulike-t")
    split = load_data(config.data)
    runs = []
    for seed in seeds:
        start = time.time()
        with threadpool_limits(1):
            scorer, info = fit(split, int(seed))
        seconds = time.time() - start
        test = evaluate(scorer, split, "test", (50, 100))
        valid = evaluate(scorer, split, "valid", (50, 100))
        runs.append({"seed": int(seed), "test": test, "valid": valid, "train_seconds": seconds,
                     **info})
        print(f"{name} seed {seed}: test recall@50 {test['recall@50']:.4f} recall@100 "
              f"{test['recall@100']:.4f} ({seconds:.0f}s, {info})", flush=True)
    return runs


# ---- ours ----------------------------------------------------------------------------------------


def run_model(key, seeds):
    label, config_path, _, _ = MODELS[key]
    if not (REPO / config_path).exists():
        print(f"{label}: {config_path} not found, skipped", flush=True)
        return None
    runs = []
    for seed in seeds:
        runs.append(run_seed(config_path, seed, SHARED_DATA / "citeulike-t"))
        metrics = runs[-1]
        print(f"{label} seed {seed}: test recall@50 {metrics['test']['recall@50']:.4f} "
              f"recall@100 {metrics['test']['recall@100']:.4f} (valid recall@50 "
              f"{metrics['valid']['recall@50']:.4f}, best epoch {metrics.get('best_epoch')}, "
              f"{metrics['train_seconds']:.0f}s)", flush=True)
    return runs


def _seeds(raw, seeds):
    """The seeds of the table's runs ("0,1,2"), or per model where they differ."""
    found = {key: ",".join(str(r["seed"]) for r in runs) for key, runs in raw["ours"].items()
             if runs}
    if not found:
        return ",".join(seeds)
    if len(set(found.values())) == 1:
        return next(iter(found.values()))
    return "; ".join(f"{MODELS[key][0]} {value}" for key, value in found.items())


def _load_raw(path):
    return json.loads(pathlib.Path(path).read_text())["raw"]


def _cell(runs, part, k):
    med, low, high = median_spread([r[part][f"recall@{k}"] for r in runs])
    return med, f"{med:.4f} ({low:.4f}–{high:.4f})"


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    seeds = FLAGS.seeds
    raw, medians = {"ours": {}, "crosscheck": {}}, {}
    earlier = {}
    if FLAGS.crosscheck_json:
        earlier["crosscheck"] = _load_raw(FLAGS.crosscheck_json)["crosscheck"]
    for path in FLAGS.ours_json:  # merged by model and seed; a later file's run wins
        raw_runs = _load_raw(path)
        # This script's files keep our runs under "ours"; benchmarks/citeulike_t.py's (the CML
        # and CML+F runs of the same configs) keep them by model key directly.
        for key, runs in raw_runs.get("ours", raw_runs).items():
            merged = {run["seed"]: run for run in earlier.setdefault("ours", {}).get(key) or []}
            merged.update({run["seed"]: run for run in runs or []})
            earlier["ours"][key] = [merged[seed] for seed in sorted(merged)] or None
    for key in FLAGS.models:
        if "ours" in earlier:
            raw["ours"][key] = earlier["ours"].get(key)
        else:
            raw["ours"][key] = None if FLAGS.crosscheck_only else run_model(key, seeds)
        for name in CROSSCHECKS.get(key, []) if FLAGS.crosscheck else []:
            if "crosscheck" in earlier:
                raw["crosscheck"][name] = earlier["crosscheck"].get(name)
            elif name not in raw["crosscheck"]:
                raw["crosscheck"][name] = run_crosscheck(name, seeds)
        # Runs so far, in case a later model fails (the table is written at the end).
        partial = REPO / "benchmarks" / "results" / f"{FLAGS.name}.partial.json"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"raw": raw}, indent=1, default=float))

    rows = []
    for key in FLAGS.models:
        label, _, paper, _ = MODELS[key]
        runs = raw["ours"][key]
        if not runs:
            checks = [(name, raw["crosscheck"].get(name)) for name in CROSSCHECKS.get(key, [])]
            rows.append([label, "not run", _paper_text(paper, 0), "; ".join(
                f"{name} {_cell(r, 'test', 50)[1]}" for name, r in checks if r) or "–", "",
                "not run", _paper_text(paper, 1), "; ".join(
                f"{name} {_cell(r, 'test', 100)[1]}" for name, r in checks if r) or "–", "", ""])
            continue
        cells = [label]
        ours = {}
        for position, k in enumerate((50, 100)):
            ours[k], text = _cell(runs, "test", k)
            checks = [(name, raw["crosscheck"].get(name)) for name in CROSSCHECKS.get(key, [])]
            check_text = "; ".join(f"{name} {_cell(r, 'test', k)[0]:.4f}" for name, r in checks
                                   if r) or "–"
            references = ([paper[position]] if paper else []) + [
                _cell(r, "test", k)[0] for _, r in checks if r]
            cells += [text, _paper_text(paper, position), check_text,
                      f"{100 * (ours[k] / max(references) - 1):+.1f}%" if references else "–"]
        medians[key] = ours
        cells.append(f"{median_spread([r['train_seconds'] for r in runs])[0]:.0f}")
        rows.append(cells)
    header = ["model", "Recall@50 median (min–max)", "paper", "cross-check (same split)",
              "vs best reference", "Recall@100 median (min–max)", "paper",
              "cross-check (same split)", "vs best reference", "train s (median)"]
    text = write_table(
        FLAGS.name, f"Table 2, CiteULike: citeulike-t test set, r=100, seeds {_seeds(raw, seeds)}",
        header, rows, raw, "python benchmarks/table2.py " + " ".join(sys.argv[1:]))
    notes = ""
    verdict = _verdict(medians, raw["crosscheck"])
    if verdict:
        notes += "\nWhere CML wins and where it does not (test medians):\n\n" + verdict + "\n"
    targets = _targets(medians, raw["crosscheck"])
    if targets:
        notes += ("\nTarget: each baseline within 5% of the better of the paper's figure and the "
                  "cross-check libraries' on this split (benchmarks/results/zoo_tuning.md has the "
                  "validation sweeps):\n\n" + targets + "\n")
    if notes:
        print(notes)
        path = REPO / "benchmarks" / "results" / f"{FLAGS.name}.md"
        path.write_text(text + notes)


def _paper_text(paper, position):
    return f"{paper[position]:.4f}" if paper else "–"


def _verdict(medians, crosscheck):
    """Plain sentences: where CML (CML+F) wins and where it does not, per group and K, against
    every other model of its group here and the cross-check libraries run on the same split. A
    CML row that was not run gets no sentence (its config missing or its run left for later)."""
    lines = []
    for ours, group, label in (("cml", "cf", "CML"), ("cml_f", "hybrid", "CML+F")):
        if ours not in medians:
            if any(MODELS[key][3] == group for key in medians):
                lines.append(f"- {label}: not run here, no verdict.")
            continue
        rivals = {MODELS[key][0]: medians[key] for key in medians
                  if MODELS[key][3] == group and key != ours}
        for key, names in CROSSCHECKS.items():
            if MODELS[key][3] == group:
                rivals.update({name: {k: _cell(crosscheck[name], "test", k)[0] for k in (50, 100)}
                               for name in names if crosscheck.get(name)})
        if not rivals:
            continue
        kind = "pure CF" if group == "cf" else "hybrid"
        for k in (50, 100):
            value = medians[ours][k]
            better = sorted((name for name in rivals if rivals[name][k] >= value),
                            key=lambda name: -rivals[name][k])
            if not better:
                best = max(rivals, key=lambda name: rivals[name][k])
                lines.append(f"- Recall@{k}: {label} wins among the {kind} models ({value:.4f}; "
                             f"the next, {best}, {rivals[best][k]:.4f}, "
                             f"{100 * (value / rivals[best][k] - 1):+.1f}%).")
            else:
                lines.append(f"- Recall@{k}: {label} does NOT win ({value:.4f}); ahead of it: "
                             + ", ".join(f"{name} {rivals[name][k]:.4f} "
                                         f"({100 * (rivals[name][k] / value - 1):+.1f}%)"
                                         for name in better) + ".")
    return "\n".join(lines)


def _targets(medians, crosscheck, tolerance=0.05):
    """Per baseline and K: within ``tolerance`` of the better of the paper's figure and the
    cross-check libraries' (issue 6's target), or how far below."""
    lines = []
    for key, values in medians.items():
        if key in ("cml", "cml_f") or MODELS[key][2] is None:  # ours, or no paper figure
            continue
        label, _, paper, _ = MODELS[key]
        parts = []
        for position, k in enumerate((50, 100)):
            references = {"paper": paper[position]}
            references.update({name: _cell(crosscheck[name], "test", k)[0]
                               for name in CROSSCHECKS.get(key, []) if crosscheck.get(name)})
            source = max(references, key=references.get)
            gap = values[k] / references[source] - 1
            verdict = "meets" if gap >= -tolerance else "MISSES"
            parts.append(f"R@{k} {verdict} ({gap * 100:+.1f}% vs {source} "
                         f"{references[source]:.4f})")
        if key == "wrmf" and crosscheck.get("implicit ALS"):  # the same solver, same setting
            gaps = [values[k] / _cell(crosscheck["implicit ALS"], "test", k)[0] - 1
                    for k in (50, 100)]
            parts.append("vs implicit ALS at the same hyperparameters (target within 2%): "
                         + " / ".join(f"{gap * 100:+.1f}%" for gap in gaps)
                         + (" meets" if all(abs(gap) <= 0.02 for gap in gaps) else " MISSES"))
        lines.append(f"- {label}: " + "; ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
