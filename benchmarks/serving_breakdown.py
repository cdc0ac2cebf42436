"""Where a ScaNN ``serving_default`` call spends its time: the 260k-item export cut into stages.

The export's ``serving_default`` (user id in, top-k ids out, training items excluded) is rebuilt
with four extra signatures, each a prefix of it, and all five are saved in one SavedModel,
loaded with ``tf.saved_model.load`` and timed like ``benchmarks/retrieval.py`` times its exports
(single-user calls, p50 per round, median over rounds; rounds interleave the stages):

1. ``nothing``: returns the batch size -- what any loaded signature call costs from Python;
2. ``lookup``: + the user id -> row hash-table lookup and the user vector;
3. ``search``: + the ScaNN search (the export's tuned depth, ``k`` + the user's known count);
4. ``select``: + the best ``k`` of them sorted, their ids, the fallback for unknown ids;
5. ``serving_default``: + the exclusion of the user's training items (the export as shipped).

    python benchmarks/serving_breakdown.py [--items=260000] [--rounds=5]

Uses the trained vectors that ``benchmarks/retrieval.py`` caches (trains them when absent) and
writes benchmarks/results/serving_breakdown.{md,json}.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import cml_tf  # noqa: I001,E402,F401  (first: routes tf.keras to Keras 2)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import retrieval as bench  # noqa: E402  (benchmarks/retrieval.py: vectors and the timing loop)
from cml_tf import export  # noqa: E402
from cml_tf.serving import ExportSpec  # noqa: E402
from cml_tf.serving.module import ServingModule, _best, build_index  # noqa: E402

STAGES = ("nothing", "lookup", "search", "select", "serving_default")


class StagedModule(ServingModule):
    """The export's module plus one signature per stage of ``serving_default`` (docstring)."""

    def __init__(self, *args):
        super().__init__(*args)
        spec = [tf.TensorSpec([None], tf.string)]
        self.nothing = tf.function(lambda user_id: {"n": tf.size(user_id)}, input_signature=spec)
        self.lookup = tf.function(lambda user_id: {"q": self._user_queries(user_id)[0]},
                                  input_signature=spec)
        self.search = tf.function(self._search_stage, input_signature=spec)
        self.select = tf.function(self._select_stage, input_signature=spec)

    def _search_stage(self, user_id):
        queries, width, _, _ = self._user_queries(user_id)
        scores, positions, _ = self._search(queries, width)
        return {"scores": scores, "positions": positions}

    def _select_stage(self, user_id):
        queries, width, _, known = self._user_queries(user_id)
        scores, positions = _best(*self._search(queries, width), self._k)
        return self._outputs(positions, scores, known)

    def signatures(self) -> dict:
        return {**super().signatures(),
                **{name: getattr(self, name).get_concrete_function() for name in STAGES[:-1]}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=260_000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the vectors")
    parser.add_argument("--queries", type=int, default=300, help="single calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache_dir", default=str(pathlib.Path.home() / ".cache" / "cml_tf" /
                                                   "benchmarks"))
    parser.add_argument("--out_dir", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    user_ids, item_ids, users, items, known, _ = bench.trained_vectors(
        str(args.items), pathlib.Path(args.cache_dir), args.epochs, args.items)
    spec = ExportSpec(user_ids, item_ids, users, items, "squared_l2", known,
                      model_name=f"CML trained {args.epochs} epochs on {args.items} items")
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="cml_tf_breakdown_") as work:
        work = pathlib.Path(work)
        # The shipped export, for the index's tuned parameters and a reference result.
        shipped = export.export(spec, work / "shipped", index="scann", k=args.k,
                                report_users=200, report_queries=50, warmup=False)
        parameters = shipped["report"]["index_parameters"]
        index = build_index("scann", items, args.k, "squared_l2",
                            {key: value for key, value in parameters.items()
                             if key != "brute_force"})
        (work / "vocabulary").mkdir()
        module = StagedModule(spec, index, args.k, str(work / "vocabulary"))
        tf.saved_model.save(module, str(work / "staged"), signatures=module.signatures())
        loaded = tf.saved_model.load(str(work / "staged"))
        reference = tf.saved_model.load(shipped["path"]).signatures["serving_default"]

        rng = np.random.default_rng(123)
        sample = tf.constant(user_ids[rng.choice(len(user_ids), 256)])
        staged = loaded.signatures["serving_default"](user_id=sample)["item_ids"].numpy()
        agreement = float(np.mean(staged == reference(user_id=sample)["item_ids"].numpy()))
        singles = [tf.constant([u]) for u in user_ids[rng.choice(len(user_ids), args.queries)]]
        signatures = {name: loaded.signatures[name] for name in STAGES}
        for signature in signatures.values():
            for query in singles[:20]:
                signature(user_id=query)
        p50s = {name: [] for name in STAGES}
        for _ in range(args.rounds):
            for name, signature in signatures.items():
                p50s[name].append(bench.one_round(signature, singles, sample, repeats=1)["p50"])
    load.append(os.getloadavg()[0])

    medians = {name: float(np.median(values)) for name, values in p50s.items()}
    lines = [f"# Where a ScaNN `serving_default` call spends its time ({args.items:,} items, "
             f"k={args.k}, r=100)", "",
             f"Command: `python benchmarks/serving_breakdown.py --items={args.items} "
             f"--rounds={args.rounds} --queries={args.queries}`. {os.cpu_count()} CPU cores, "
             f"TensorFlow "
             f"{tf.__version__}; load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} "
             f"at the end. ScaNN parameters (tuned by the export to recall@{args.k} >= 0.98): "
             f"{', '.join(f'{k}={v}' for k, v in parameters.items() if v is not None)}. The "
             f"staged export's top-{args.k} ids equal the shipped export's in "
             f"{agreement:.1%} of 256 x {args.k} slots.", "",
             "| stage (each includes the ones above) | p50 ms (median of rounds) | added ms | "
             "p50 per round |", "|---|---|---|---|"]
    previous = 0.0
    for name in STAGES:
        lines.append(f"| `{name}` | {medians[name]:.3f} | {medians[name] - previous:+.3f} | "
                     f"{' '.join(f'{v:.3f}' for v in p50s[name])} |")
        previous = medians[name]
    bound = medians["nothing"] + medians["search"] - medians["lookup"]
    lines += ["", f"The issue's target of a 0.25 ms p50 at 260k items: an empty call plus the "
              f"ScaNN search alone take {bound:.3f} ms here, before the id lookup, the sorting "
              f"and the exclusions."]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving_breakdown.md").write_text(table)
    (out / "serving_breakdown.json").write_text(json.dumps(
        {"setup": vars(args), "parameters": parameters, "agreement": agreement,
         "load_average": load, "p50_ms": p50s, "median_ms": medians}, indent=2))
    print(f"wrote {out / 'serving_breakdown.md'} and .json")


if __name__ == "__main__":
    main()
