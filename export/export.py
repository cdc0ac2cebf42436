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

Bad flags (a k below 1, ``--index_options`` that is not a JSON object of the index's own
parameters, an ``--export_dir`` that is a file, a folder that is not a training workdir, a
``--new_items`` file that does not exist) are refused with one line ``error: ...`` and exit
status 1 before anything is loaded.
"""

import difflib
import inspect
import json
import pathlib
import sys
import typing

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import cml_tf  # noqa: E402,F401  (first: routes tf.keras to Keras 2)
from cml_tf.main import HELP_FLAGS, one_line, use_absl_logging  # noqa: E402  (quiets TF too)
from absl import flags, logging  # noqa: E402

INDEXES = ("scann", "partitioned", "brute_force")


class CommandLineError(ValueError):
    """A flag this script cannot use."""


def define_flags(flag_values: flags.FlagValues):
    options = {"flag_values": flag_values}
    flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and "
                        "checkpoints/).", **options)
    flags.DEFINE_enum("index", None, list(INDEXES), "Top-K index (default: the config's "
                      "export.index, else scann). scann needs ScaNN's ops in the server; "
                      "partitioned and brute_force are stock TensorFlow.", **options)
    flags.DEFINE_integer("k", None, "Results per query (default: the config's export.k, else "
                         "100).", **options)
    flags.DEFINE_string("export_dir", None, "Base folder (default: <workdir>/saved_model).",
                        **options)
    flags.DEFINE_integer("version", 0, "Version folder (default 0: the next free integer).",
                         **options)
    flags.DEFINE_bool("overwrite", False, "Replace an existing version.", **options)
    flags.DEFINE_enum("checkpoint", "auto", ["auto", "best", "latest"], "Weights to export: "
                      "best validation weights, last epoch, or best if present.", **options)
    flags.DEFINE_integer("report_users", 1000, "Users sampled to measure recall against "
                         "exact.", **options)
    flags.DEFINE_integer("report_queries", 200, "Timed single-user calls in the report.",
                         **options)
    flags.DEFINE_string("new_items", None, "Feature table of items to add without retraining "
                        "(CSV/TSV/Parquet with columns item, feature and optionally value; one "
                        "row per item and feature): each is embedded with the model's feature "
                        "prior f(x) and put in the index of the new version. CML+F models only.",
                        **options)
    flags.DEFINE_string("index_options", "{}", "JSON object of index parameters, e.g. "
                        "'{\"num_leaves\": 500}' (ScaNN) or '{\"num_partitions_to_search\": 40}' "
                        "(partitioned).", **options)


def parse(argv) -> flags.FlagValues:
    """The parsed flags of ``argv`` (``argv[0]`` is the program); CommandLineError if bad."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    try:
        unparsed = flag_values(list(argv))
    except flags.Error as error:
        raise CommandLineError(one_line(error)) from None
    if len(unparsed) > 1:
        raise CommandLineError(f"unexpected arguments: {' '.join(unparsed[1:])}")
    return flag_values


def check_flags(options: flags.FlagValues) -> dict:
    """Everything that can be checked before the model is loaded; returns ``--index_options``
    as a dict. CommandLineError naming the flag of the first problem."""
    if not options.workdir:
        raise CommandLineError("--workdir is required: the training workdir to export")
    workdir = pathlib.Path(options.workdir)
    config_file = workdir / "config.json"
    if not workdir.is_dir():
        raise CommandLineError(f"--workdir {workdir} is not a folder")
    if not config_file.is_file():
        raise CommandLineError(f"--workdir {workdir} holds no config.json: not a training "
                               "workdir")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise CommandLineError(f"{config_file} cannot be read as JSON: {error}") from None
    for name, minimum in (("k", 1), ("version", 0), ("report_users", 1),
                          ("report_queries", 1)):
        value = options[name].value
        if value is not None and value < minimum:
            raise CommandLineError(f"--{name} must be at least {minimum}, got {value}")
    if options.export_dir and pathlib.Path(options.export_dir).exists() \
            and not pathlib.Path(options.export_dir).is_dir():
        raise CommandLineError(f"--export_dir {options.export_dir} is a file, expected a "
                               "folder (the model's base folder)")
    if options.new_items is not None and not pathlib.Path(options.new_items).is_file():
        raise CommandLineError(f"--new_items {options.new_items} is not a file (a feature table "
                               "of the items to add)")
    try:
        index_options = json.loads(options.index_options)
    except ValueError as error:
        raise CommandLineError(f"--index_options is not valid JSON ({error}): "
                               f"{options.index_options!r}") from None
    if not isinstance(index_options, dict):
        raise CommandLineError(f"--index_options must be a JSON object such as "
                               f"'{{\"num_leaves\": 500}}', got {options.index_options!r}")
    index = options.index or (config.get("export") or {}).get("index", "scann")
    check_index_options(index, index_options)
    return index_options


def check_index_options(index: str, index_options: dict):
    """CommandLineError for a key the index's layer does not take or a value of the wrong type."""
    # pylint: disable=import-outside-toplevel
    from cml_tf.layers import retrieval
    layer = {"scann": retrieval.ScaNN, "partitioned": retrieval.Partitioned,
             "brute_force": retrieval.BruteForce}.get(index)
    if layer is None:
        raise CommandLineError(f"index {index!r} (from config.json's export.index) is not one of "
                               f"{', '.join(INDEXES)}")
    parameters = {name: parameter for name, parameter
                  in inspect.signature(layer.__init__).parameters.items()
                  if name not in ("self", "query_model", "k", "metric", "name")}
    for key, value in index_options.items():
        if key not in parameters:
            close = difflib.get_close_matches(key, parameters, n=1)
            raise CommandLineError(
                f"--index_options: {index} takes no parameter {key!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; its parameters: {', '.join(parameters) or '(none)'}")
        allowed = _types(parameters[key].annotation)
        if value is not None and allowed and not _is_instance(value, allowed):
            raise CommandLineError(
                f"--index_options: {key} must be {' or '.join(t.__name__ for t in allowed)}, "
                f"got {value!r}")


def _types(annotation) -> tuple:
    if annotation is inspect.Parameter.empty:
        return ()
    return tuple(t for t in (typing.get_args(annotation) or (annotation,))
                 if isinstance(t, type) and t is not type(None))


def _is_instance(value, allowed: tuple) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed) or (float in allowed and isinstance(value, int))


def main(argv=None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv``); returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    if any(argument in HELP_FLAGS for argument in argv[1:]):
        flag_values = flags.FlagValues()
        define_flags(flag_values)
        print(__doc__.strip() + "\n\nflags:\n"
              + flag_values.get_help(prefix="  ", include_special_flags=False))
        return 0
    try:
        options = parse(argv)
        index_options = check_flags(options)
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # pylint: disable=import-outside-toplevel
    from cml_tf import export
    from cml_tf.data.errors import DataError
    from cml_tf.data.features import NewItemsError
    try:
        result = export.export_workdir(
            options.workdir, index=options.index, k=options.k, export_dir=options.export_dir,
            checkpoint=options.checkpoint, version=options.version or None,
            overwrite=options.overwrite, report_users=options.report_users,
            report_queries=options.report_queries, new_items=options.new_items,
            **({"index_options": index_options} if index_options else {}))
    except NewItemsError as error:
        print(f"error: --new_items: {one_line(error)}", file=sys.stderr)
        return 1
    except DataError as error:
        print(f"error: cannot load the data of the run in {options.workdir} (its config.json): "
              f"{one_line(error)}", file=sys.stderr)
        return 1
    except (export.ExportError, OSError, ValueError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
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
        print(f"  {report['new_items']} new items from {options.new_items} are in the index "
              f"({report['n_items']:,} items in all)")
    return 0


if __name__ == "__main__":
    use_absl_logging(logging.WARNING)
    sys.exit(main())
