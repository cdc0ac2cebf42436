"""Top-K serving benchmark through the exported SavedModel: latency, throughput and recall of
the ``scann``, ``partitioned`` and ``brute_force`` exports.

For each catalogue size a CML model (r=100) is trained for a few epochs on synthetic data with
planted structure (``cml_tf.data.synthetic``: taste clusters, power-law popularity, bridge
users), its vectors cached, and exported three times with ``cml_tf.export.export`` (defaults:
each approximate index tuned to recall@k 0.98 against exact search on 500 other users). Every
export is loaded with ``tf.saved_model.load`` and measured through its ``serving_default``
signature -- user id in, top-k item ids out, training items excluded -- exactly what a client
gets:

* recall@10 and recall@50 against exact search (exclusions applied to both) on --users users;
* single-query latency: --queries calls of one user id each, per round; p50/p99 of each round,
  the median over --rounds rounds (rounds interleave the three exports, so a burst of load on
  this shared machine hits all of them alike);
* batched throughput: users per second in batches of --batch, median over rounds;
* speed-up = exact p50 / index p50; export size on disk; export time (build, tuning, save,
  smoke test, report);
* the same single-user latency through C++ -- ``export/serving_example.cc``, compiled here,
  loading the export with ``tensorflow::LoadSavedModel`` and timing ``Session::Run`` as TF
  Serving does, without Python's per-call cost -- with the session's inter-op thread pool
  (``pool``, TensorFlow's default) and with every op in the calling thread (``inline``,
  ``inter_op_parallelism_threads=-1``). Skipped with ``--no_cpp`` or without a compiler.

    python benchmarks/retrieval.py                                   # 26k, 260k, 1M items
    python benchmarks/retrieval.py --sizes=260000 --rounds=3
    CML_TF_DATA=../shared/data python benchmarks/retrieval.py --citeulike   # + real citeulike-t

Writes benchmarks/results/retrieval.{md,json}. Targets: at 260k items ScaNN p50 <= 0.25 ms
and >= 15x the exact export at recall@50 >= 0.98, at 1M items >= 40x (issue "SavedModel
export"); the same 15x and 40x at recall@50 >= 0.98 for the stock-TensorFlow ``partitioned``
export (issue 16; the C++ ``Session::Run`` p50 is the one that counts). Checked for each path
(Python, C++ pool, C++ inline) and printed, not asserted.
"""

import argparse
import itertools
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "export"))

import cml_tf  # noqa: I001,E402,F401  (first: routes tf.keras to Keras 2)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cml_tf import export  # noqa: E402
from cml_tf.serving import ExportSpec  # noqa: E402
from cml_tf.serving.check import exact_recommendations  # noqa: E402
import build_example  # noqa: E402

INDEXES = ("brute_force", "scann", "partitioned")
CPP_MODES = {"pool": 0, "inline": -1}  # serving_example --inter_op_threads
CITEULIKE_ITEMS = 25_975


# ---- vectors from a trained model -------------------------------------------------------------


def synthetic_setup(n_items: int) -> dict:
    """Synthetic data of ``n_items`` items: users = items / 2 (at least 8,000), ~20 likes each,
    about sqrt(n_items) / 5 taste clusters."""
    return {"n_items": n_items, "n_users": max(n_items // 2, 8000), "mean_per_user": 20.0,
            "n_clusters": max(int(round(np.sqrt(n_items) / 5)), 10), "with_features": False,
            "seed": 0}


def trained_vectors(name: str, cache_dir: pathlib.Path, epochs: int, n_items: int | None):
    """(user_ids, item_ids, user_vectors, item_vectors, known CSR, train seconds), cached."""
    import scipy.sparse as sp

    cache = cache_dir / f"{name}-e{epochs}.npz"
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        known = sp.csr_matrix((saved["data"], saved["indices"], saved["indptr"]),
                              shape=tuple(saved["shape"]))
        return (saved["user_ids"], saved["item_ids"], saved["users"], saved["items"], known,
                float(saved["train_seconds"]))
    from cml_tf.data.pipeline import positive_pairs_dataset
    from cml_tf.models import CML

    if name == "citeulike-t":
        from cml_tf.data import load
        data = load("citeulike-t", download=False, with_features=False)
        margin = 1.5
    else:
        from cml_tf.data.synthetic import make_synthetic
        data = make_synthetic(**synthetic_setup(n_items))
        margin = 0.5
    tf.keras.utils.set_random_seed(0)
    model = CML.from_interactions(data, use_features=False, dim=100, margin=margin)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    start = time.time()
    model.fit(positive_pairs_dataset(data, batch_size=8192), epochs=epochs, verbose=0)
    seconds = time.time() - start
    known = data.matrix
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, user_ids=data.user_ids, item_ids=data.item_ids, users=model.user_vectors,
             items=model.item_vectors, data=known.data, indices=known.indices,
             indptr=known.indptr, shape=np.array(known.shape), train_seconds=seconds)
    return data.user_ids, data.item_ids, model.user_vectors, model.item_vectors, known, seconds


# ---- measurements -----------------------------------------------------------------------------


def recall_at(found: np.ndarray, reference: np.ndarray, depth: int) -> float:
    values = []
    for f, r in zip(found, reference):
        truth = {i for i in r[:depth] if i}
        if truth:
            values.append(len(truth & set(f[:depth])) / len(truth))
    return float(np.mean(values))


def served_ids(signature, user_ids, batch=256) -> np.ndarray:
    rows = []
    for lo in range(0, len(user_ids), batch):
        out = signature(user_id=tf.constant(user_ids[lo:lo + batch]))
        rows.append(np.char.decode(out["item_ids"].numpy().astype(bytes), "utf-8"))
    return np.concatenate(rows)


def one_round(signature, singles, batch, repeats=3) -> dict:
    times = []
    for query in singles:
        start = time.perf_counter()
        signature(user_id=query)
        times.append((time.perf_counter() - start) * 1e3)
    start = time.perf_counter()
    for _ in range(repeats):
        signature(user_id=batch)
    per_batch = (time.perf_counter() - start) / repeats
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "qps": int(batch.shape[0]) / per_batch}


def cpp_round(binary, path, index, ids, calls, threads) -> dict:
    """p50/p99 (ms) of ``calls`` single-id Session::Run calls of a fresh C++ process."""
    args = [str(binary), f"--latency={calls}", f"--inter_op_threads={threads}"]
    if index == "scann":
        args.append(f"--ops_library={build_example.scann_ops_library()}")
    done = subprocess.run(args + [str(path), *ids], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"serving_example failed on {path}: {done.stderr[-2000:]}")
    timing = json.loads(done.stdout)
    return {"p50": timing["p50_ms"], "p99": timing["p99_ms"]}


def benchmark_size(name, args, cache_dir, work_dir, binary=None) -> list[dict]:
    user_ids, item_ids, users, items, known, train_seconds = trained_vectors(
        name, cache_dir, args.epochs, None if name == "citeulike-t" else int(name))
    spec = ExportSpec(user_ids, item_ids, users, items, "squared_l2", known,
                      model_name=f"CML trained {args.epochs} epochs on {name}")
    print(f"\n== {name}: {spec.n_users:,} users x {spec.n_items:,} items, r={spec.dim} "
          f"(trained in {train_seconds:.0f}s)", flush=True)
    rng = np.random.default_rng(123)
    sample = np.sort(rng.choice(spec.n_users, min(args.users, spec.n_users), replace=False))
    start = time.time()
    _, positions = exact_recommendations(spec, sample, args.k)
    exact_ids = np.where(positions >= 0, spec.item_ids[np.maximum(positions, 0)], "")
    print(f"exact reference for {len(sample)} users in {time.time() - start:.1f}s", flush=True)

    loaded, results, paths = {}, {}, {}
    for index in INDEXES:
        folder = work_dir / f"{name}-{index}"
        shutil.rmtree(folder, ignore_errors=True)
        start = time.time()
        result = export.export(spec, folder, index=index, k=args.k, report_users=200,
                               report_queries=50, warmup=False)
        seconds = time.time() - start
        loaded[index] = tf.saved_model.load(result["path"])
        paths[index] = result["path"]
        signature = loaded[index].signatures["serving_default"]
        found = served_ids(signature, spec.user_ids[sample])
        results[index] = {
            "catalogue": name, "items": spec.n_items, "users": spec.n_users, "index": index,
            "parameters": result["report"]["index_parameters"],
            "recall@10": recall_at(found, exact_ids, 10),
            f"recall@{args.k}": recall_at(found, exact_ids, args.k),
            "export_seconds": seconds, "size_mb": result["size_bytes"] / 2**20,
            "tuning": {key: value for key, value in result["report"]["tuning"].items()
                       if key != "tried"},
            "rounds": [], "cpp_rounds": {mode: [] for mode in CPP_MODES}}
        print(f"{index:12s} exported in {seconds:6.1f}s ({results[index]['size_mb']:.0f} MB) "
              f"recall@10 {results[index]['recall@10']:.4f} recall@{args.k} "
              f"{results[index][f'recall@{args.k}']:.4f} {results[index]['parameters']}",
              flush=True)

    single_ids = [str(u) for u in spec.user_ids[rng.choice(spec.n_users, args.queries)]]
    singles = [tf.constant([u]) for u in single_ids]
    batch = tf.constant(spec.user_ids[rng.choice(spec.n_users, args.batch)])
    for index in INDEXES:                                   # warm up every export
        for query in singles[:20]:
            loaded[index].signatures["serving_default"](user_id=query)
    for r in range(args.rounds):
        for index in INDEXES:
            results[index]["rounds"].append(
                one_round(loaded[index].signatures["serving_default"], singles, batch))
        print(f"round {r + 1}: " + ", ".join(
            f"{i} p50 {results[i]['rounds'][-1]['p50']:.3f} ms" for i in INDEXES), flush=True)
    del loaded
    for r in range(args.rounds if binary else 0):
        for index in INDEXES:
            for mode, threads in CPP_MODES.items():
                results[index]["cpp_rounds"][mode].append(
                    cpp_round(binary, paths[index], index, single_ids, args.queries, threads))
        print(f"C++ round {r + 1}: " + ", ".join(
            f"{i} p50 " + "/".join(f"{results[i]['cpp_rounds'][m][-1]['p50']:.3f}"
                                    for m in CPP_MODES) for i in INDEXES)
            + " ms (" + "/".join(CPP_MODES) + ")", flush=True)
    rows = [results[index] for index in INDEXES]
    summarize(rows, "rounds", "", ("p50", "p99", "qps"))
    for mode in CPP_MODES if binary else ():
        summarize(rows, "cpp_rounds", mode, ("p50", "p99"))
    if not args.keep_exports:
        for index in INDEXES:
            shutil.rmtree(work_dir / f"{name}-{index}", ignore_errors=True)
    return rows


def summarize(rows, rounds_key, mode, keys):
    """Medians over the rounds as ``{prefix}{key}_median`` and ``{prefix}speedup_p50`` (exact
    p50 / this p50) on every row; prefix ``cpp_{mode}_`` for a C++ mode."""
    prefix = f"cpp_{mode}_" if mode else ""

    def rounds(row):
        return row[rounds_key][mode] if mode else row[rounds_key]

    for row in rows:
        for key in keys:
            row[f"{prefix}{key}_median"] = float(np.median([x[key] for x in rounds(row)]))
    exact = next(row for row in rows if row["index"] == "brute_force")[f"{prefix}p50_median"]
    for row in rows:
        row[f"{prefix}speedup_p50"] = exact / row[f"{prefix}p50_median"]


def call_floor_ms(work_dir: pathlib.Path, rounds: int, queries: int) -> float:
    """p50 of a loaded signature that does nothing but return its input's size: what any
    SavedModel call costs from Python on this machine, whatever the index."""
    module = tf.Module()
    module.f = tf.function(lambda user_id: {"n": tf.size(user_id)},
                           input_signature=[tf.TensorSpec([None], tf.string)])
    path = work_dir / "call-floor"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.f})
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    query = tf.constant(["u0"])
    for _ in range(20):
        signature(user_id=query)
    p50s = []
    for _ in range(rounds):
        times = []
        for _ in range(queries):
            start = time.perf_counter()
            signature(user_id=query)
            times.append((time.perf_counter() - start) * 1e3)
        p50s.append(float(np.percentile(times, 50)))
    shutil.rmtree(path, ignore_errors=True)
    return float(np.median(p50s))


PATHS = {"": "Python", "cpp_pool_": "C++ pool", "cpp_inline_": "C++ inline"}


def check_targets(rows, k) -> list[str]:
    """The issue's targets, as lines of text, for every path that was measured."""
    by = {(r["items"], r["index"]): r for r in rows}
    lines = []

    def line(ok, text):
        lines.append(f"{'PASS' if ok else 'MISS'}: {text}")

    for prefix, path in PATHS.items():
        if not any(f"{prefix}p50_median" in r for r in rows):
            continue
        # The same speed-up targets for ScaNN ("SavedModel export") and for the stock-TF
        # partitioned export (issue 16).
        for (n, wanted), (index, label) in itertools.product(
                ((260_000, 15), (1_000_000, 40)),
                (("scann", "ScaNN"), ("partitioned", "partitioned (stock TensorFlow)"))):
            row = by.get((n, index))
            if not row:
                continue
            speedup = row[f"{prefix}speedup_p50"]
            line(speedup >= wanted and row[f"recall@{k}"] >= 0.98,
                 f"{path}, {n:,} items: {label} {speedup:.1f}x the exact export (target >= "
                 f"{wanted}x) at recall@{k} {row[f'recall@{k}']:.4f} (>= 0.98)")
            if index == "scann" and n == 260_000:
                p50 = row[f"{prefix}p50_median"]
                line(p50 <= 0.25, f"{path}, 260,000 items: ScaNN p50 {p50:.3f} ms (target "
                     "<= 0.25)")
    return lines


def markdown(rows, args, targets, floor_ms, load) -> str:
    k = args.k
    out = [f"# Serving benchmark: exported SavedModels, `serving_default` (k={k}, r=100)", "",
           f"Machine: {os.cpu_count()} CPU cores, "
           f"TensorFlow {tf.__version__}, Python {platform.python_version()}. "
           f"Latency: median over {args.rounds} rounds of each round's p50/p99 over "
           f"{args.queries} single-user calls; throughput: batches of {args.batch}. Recall "
           f"against exact search on {args.users} users, training items excluded. A loaded "
           f"signature that does nothing costs {floor_ms:.3f} ms per call here (the floor of "
           f"every Python p50 below). Load average (1 min) at the start and end of the run: "
           f"{load[0]:.1f} and {load[1]:.1f}.", "",
           "## Python: `tf.saved_model.load`, the `serving_default` signature", "",
           f"| catalogue | items | index | recall@10 | recall@{k} | p50 ms | p99 ms | "
           f"speed-up (p50) | batch users/s | export MB | export s | parameters |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{a}={b}" for a, b in r["parameters"].items() if b is not None)
        out.append(f"| {r['catalogue']} | {r['items']:,} | {r['index']} | {r['recall@10']:.4f} | "
                   f"{r[f'recall@{k}']:.4f} | {r['p50_median']:.3f} | {r['p99_median']:.3f} | "
                   f"{r['speedup_p50']:.1f}x | {r['qps_median']:,.0f} | {r['size_mb']:.0f} | "
                   f"{r['export_seconds']:.0f} | {params} |")
    if any("cpp_inline_p50_median" in r for r in rows):
        out += ["", "## C++: `tensorflow::LoadSavedModel` + `Session::Run` (TF Serving's path)",
                "", "`export/serving_example.cc --latency`, the same exports and user ids. "
                "*pool*: TensorFlow's default inter-op thread pool; *inline*: every op in the "
                "calling thread (`--inter_op_threads=-1`, ConfigProto "
                "`inter_op_parallelism_threads` < 0). Recall as above (same exports).", "",
                "| catalogue | items | index | pool p50 ms | pool p99 ms | pool speed-up | "
                "inline p50 ms | inline p99 ms | inline speed-up |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['catalogue']} | {r['items']:,} | {r['index']} | " + " | ".join(
                f"{r[f'cpp_{m}_p50_median']:.3f} | {r[f'cpp_{m}_p99_median']:.3f} | "
                f"{r[f'cpp_{m}_speedup_p50']:.1f}x" for m in CPP_MODES) + " |")
    out += ["", "Targets:", ""] + [f"- {t}" for t in targets]
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=f"{CITEULIKE_ITEMS},260000,1000000",
                        help="catalogue sizes (items) of the synthetic models")
    parser.add_argument("--citeulike", action="store_true",
                        help="also the real citeulike-t (needs $CML_TF_DATA/citeulike-t)")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--users", type=int, default=1000, help="users of the recall figures")
    parser.add_argument("--queries", type=int, default=300, help="single calls per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache_dir", default=str(pathlib.Path.home() / ".cache" / "cml_tf" /
                                                   "benchmarks"))
    parser.add_argument("--work_dir", default=None, help="where exports are written "
                        "(default: a temporary folder)")
    parser.add_argument("--keep_exports", action="store_true")
    parser.add_argument("--no_cpp", action="store_true",
                        help="skip the C++ latency (export/serving_example.cc)")
    parser.add_argument("--out_dir", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    import tempfile

    work_dir = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="cml_tf_bench_"))
    names = [s for s in args.sizes.split(",") if s] + (["citeulike-t"] if args.citeulike else [])
    binary = None
    if args.no_cpp or build_example.compiler() is None:
        print("C++ latency skipped" + ("" if args.no_cpp else ": no C++ compiler"))
    else:
        binary = build_example.build(work_dir / "serving_example")
    rows, load = [], [os.getloadavg()[0]]
    for name in names:
        rows += benchmark_size(name, args, pathlib.Path(args.cache_dir), work_dir, binary)
    floor_ms = call_floor_ms(work_dir, args.rounds, args.queries)
    load.append(os.getloadavg()[0])
    targets = check_targets(rows, args.k)
    table = markdown(rows, args, targets, floor_ms, load)
    print("\n" + table)
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval.md").write_text(table)
    (out / "retrieval.json").write_text(json.dumps(
        {"setup": vars(args), "synthetic": {n: synthetic_setup(int(n)) for n in names
                                            if n.isdigit()},
         "call_floor_ms": floor_ms, "load_average": load, "rows": rows, "targets": targets},
        indent=2))
    print(f"wrote {out / 'retrieval.md'} and .json")
    if not args.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
