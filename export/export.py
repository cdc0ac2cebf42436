"""Export a trained workdir as a versioned SavedModel (TF Serving layout).

    python export/export.py --workdir=runs/cml                       # ScaNN, k from the config
    python export/export.py --workdir=runs/cml --index=partitioned --k=50
    python export/export.py --workdir=runs/cml --index=brute_force \
        --export_dir=/models/cml --version=7 --overwrite
    python export/export.py --workdir=runs/cml_f --new_items=new_items.csv   # cold-start items

Rebuilds the model from the workdir's ``config.json`` (data through
``cml_tf.data.from_config.load_data``, the same split) and its checkpoints
(``checkpoints/best/weights`` when the run had validation, else the last epoch), then writes
``<export_dir>/<version>/`` (default ``<workdir>/saved_model/<next free version>``) through a
temporary folder that is renamed into place only after every signature passed a smoke test.
An existing version is refused unless ``--overwrite``. Prints the index report (recall against
exact search, latency) and where the export went. See ``export/README.md``.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import cml_tf  # noqa: E402,F401  (first: routes tf.keras to Keras 2)
from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
flags.DEFINE_enum("index", None, ["scann", "partitioned", "brute_force"],
                  "Top-K index (default: the config's export.index, else scann). scann needs "
                  "ScaNN's ops in the server; partitioned and brute_force are stock TensorFlow.")
flags.DEFINE_integer("k", None, "Results per query (default: the config's export.k, else 100).")
flags.DEFINE_string("export_dir", None, "Base folder (default: <workdir>/saved_model).")
flags.DEFINE_integer("version", 0, "Version folder (default 0: the next free integer).")
flags.DEFINE_bool("overwrite", False, "Replace an existing version.")
flags.DEFINE_enum("checkpoint", "auto", ["auto", "best", "latest"],
                  "Weights to export: best validation weights, last epoch, or best if present.")
flags.DEFINE_integer("report_users", 1000, "Users sampled to measure recall against exact.")
flags.DEFINE_integer("report_queries", 200, "Timed single-user calls in the report.")
flags.DEFINE_string("new_items", None,
                    "Feature table of items to add without retraining (CSV/TSV/Parquet with "
                    "columns item, feature and optionally value; one row per item and "
                    "feature): each is embedded with the model's feature prior f(x) and put in "
                    "the index of the new version. CML+F models only.")
flags.DEFINE_string("index_options", "{}",
                    "JSON object of index parameters, e.g. '{\"num_leaves\": 500}' (ScaNN) or "
                    "'{\"num_partitions_to_search\": 40}' (partitioned).")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from cml_tf import export  # pylint: disable=import-outside-toplevel
    try:
        options = json.loads(FLAGS.index_options) or None
        result = export.export_workdir(
            FLAGS.workdir, index=FLAGS.index, k=FLAGS.k, export_dir=FLAGS.export_dir,
            checkpoint=FLAGS.checkpoint, version=FLAGS.version or None,
            overwrite=FLAGS.overwrite, report_users=FLAGS.report_users,
            report_queries=FLAGS.report_queries, new_items=FLAGS.new_items,
            **({"index_options": options} if options else {}))
    except (export.ExportError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    report = result["report"]
    small = report["recall_small_k"]
    k = result["k"]
    print(f"exported {result['path']} ({result['size_bytes'] / 2**20:.1f} MB, "
          f"{result['seconds']:.1f}s)")
    recalls = ", ".join(f"recall@{n} {report[f'recall@{n}']:.4f}" for n in sorted({small, k}))
    print(f"  index {result['index']} {report['index_parameters']}: {recalls} vs exact on "
          f"{report['sample_users']} users; 1 user p50 {report['latency_ms']['p50']:.2f} ms")
    print(f"  signatures: {', '.join(report['signatures'])}")
    if report["new_items"]:
        print(f"  {report['new_items']} new items from {FLAGS.new_items} are in the index "
              f"({report['n_items']:,} items in all)")
    return 0


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(lambda argv: sys.exit(main(argv)))
