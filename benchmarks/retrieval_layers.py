"""Micro-benchmark of the top-K retrieval layers (cml_tf.layers.retrieval): recall and latency.

Clustered unit-ball data (Gaussian clusters censored into the ball, like trained CML
embeddings); the ground truth is the exact BruteForce layer (checked against numpy in
tests/layers/test_retrieval.py); default parameters for
every approximate layer. Prints a Markdown table and writes it with a JSON copy.

    python benchmarks/retrieval_layers.py                       # 100k items x 100 dims, ~1 min
    python benchmarks/retrieval_layers.py --num_items=20000 --out_dir=/tmp/bench

Latency is wall time of a tf.function call on this machine (2 shared CPU cores in the reference
runs): "1 query" is the serving case, "batch" the per-query cost of a batch of --batch queries.
"""

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# cml_tf first: it routes tf.keras to Keras 2 before TensorFlow loads.
import cml_tf  # noqa: I001, F401
import numpy as np
import tensorflow as tf

from cml_tf.layers import retrieval


def clustered(n, dim, clusters, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) / np.sqrt(dim) * 0.7
    x = centers[rng.integers(clusters, size=n)] + rng.normal(size=(n, dim)) / np.sqrt(dim) * spread
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1.0)).astype(np.float32)


def users_between(items, num_queries, mix, seed, noise=0.1):
    """Queries that sit between clusters: the mean of ``mix`` random items plus noise (a CML
    user is pulled towards all of their items, which rarely share one cluster)."""
    rng = np.random.default_rng(seed)
    picks = items[rng.integers(len(items), size=(num_queries, mix))].mean(axis=1)
    q = picks + rng.normal(size=picks.shape) / np.sqrt(items.shape[1]) * noise
    return (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1.0)).astype(np.float32)


def recall(found, exact):
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def latency_ms(fn, queries, repeats):
    fn(queries)                                     # trace + warm up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(queries)
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--spread", type=float, default=0.6,
                        help="within-cluster spread (cluster centres have norm ~0.7)")
    parser.add_argument("--num_queries", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--query_mix", type=int, default=2,
                        help="1: queries drawn like the items; m > 1: each query is the mean of "
                        "m random items (between clusters, harder)")
    parser.add_argument("--ks", default="10,100")
    parser.add_argument("--metric", default="squared_l2", choices=retrieval.METRICS)
    parser.add_argument("--out_dir", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]

    points = clustered(args.num_items + args.num_queries, args.dim, args.clusters, seed=0,
                       spread=args.spread)
    items, queries = points[:args.num_items], points[args.num_items:]
    if args.query_mix > 1:
        queries = users_between(items, args.num_queries, args.query_mix, seed=1)
    exact = {}
    rows = []
    for k in ks:
        for name in ("BruteForce", "Partitioned", "ScaNN"):
            start = time.perf_counter()
            layer = getattr(retrieval, name)(k=k, metric=args.metric).index(items)
            build_s = time.perf_counter() - start
            search = tf.function(lambda q, layer=layer: layer(q)[1])
            found = np.concatenate([search(queries[i:i + args.batch]).numpy()
                                    for i in range(0, len(queries), args.batch)])
            if name == "BruteForce":
                exact[k] = found
            one = latency_ms(search, queries[:1], repeats=30)
            batch = latency_ms(search, queries[:args.batch], repeats=3) / args.batch
            params = (layer.params if name == "ScaNN" else
                      {"num_partitions": layer.num_partitions,
                       "num_partitions_to_search": layer.num_partitions_to_search}
                      if name == "Partitioned" else {})
            rows.append({"layer": name, "k": k, "recall": recall(found, exact[k]),
                         "build_s": build_s, "ms_1_query": one, "ms_per_query_in_batch": batch,
                         "params": params})
            print(f"{name:12s} k={k:4d} recall={rows[-1]['recall']:.4f} build={build_s:6.2f}s "
                  f"1 query={one:7.3f} ms  batch={batch:7.3f} ms/query  {params}", flush=True)

    header = (f"{args.num_items} items x {args.dim} dims ({args.clusters} clusters, "
              f"spread={args.spread}, "
              f"query_mix={args.query_mix}), "
              f"{args.num_queries} queries, metric={args.metric}, batch={args.batch}")
    lines = [f"# Retrieval layers: {header}", "",
             ("| layer | k | recall@k vs exact | build (s) | 1 query (ms) | batch (ms/query) | "
              "parameters |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['layer']} | {r['k']} | {r['recall']:.4f} | {r['build_s']:.2f} | "
                     f"{r['ms_1_query']:.3f} | {r['ms_per_query_in_batch']:.3f} | {params} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out_dir, exist_ok=True)
    out = pathlib.Path(args.out_dir)
    (out / "retrieval_layers.md").write_text(table + "\n")
    (out / "retrieval_layers.json").write_text(
        json.dumps({"setup": vars(args), "rows": rows}, indent=2))
    print(f"wrote {out / 'retrieval_layers.md'} and .json")


if __name__ == "__main__":
    main()
