"""Shared helpers of the benchmark scripts: loading configs, running train_and_evaluate in a
temporary workdir, medians, and writing a table as Markdown and JSON."""

import importlib.util
import json
import os
import pathlib
import statistics
import tempfile

from absl import logging

from cml_tf.main import OwnInfoOnly  # also quiets TensorFlow's C++ start-up lines

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = pathlib.Path(os.environ.get("CML_TF_SHARED_DATA", REPO.parent / "shared" / "data"))

# The scripts' log shows this package's INFO lines (per-epoch validation recall) and warnings
# from anywhere, as the train command does, not TensorFlow's INFO chatter.
logging.get_absl_handler().addFilter(OwnInfoOnly(REPO / "benchmarks"))


def load_config(path):
    """``get_config()`` of a config file (path relative to the repository root)."""
    path = REPO / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def run(config, keep_workdir=None, skip_test=False):
    """train_and_evaluate in a fresh temporary workdir (removed afterwards); returns metrics.

    ``skip_test``: evaluate on the validation set only (for tuning).
    """
    from cml_tf import train  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory(prefix="cml_bench_") as workdir:
        return train.train_and_evaluate(config, keep_workdir or workdir, skip_test=skip_test)


def quiet_config(config_path, data_dir=None):
    """A config file set up for a measurement: the shared data, no export, no pictures (they
    cost time and are not measured), no progress bar."""
    config = load_config(config_path)
    config.data.data_dir = str(data_dir or SHARED_DATA / config.data.name)
    config.export.enabled = False
    if "viz" in config:
        config.viz.enabled = False
    config.train.verbose = 0
    return config


def run_seed(config_path, seed, data_dir=None):
    """One quiet training run of a config file with ``config.seed = seed`` on the shared data
    (export and pictures off); returns the per-seed record the result tables keep."""
    config = quiet_config(config_path, data_dir)
    config.seed = int(seed)
    metrics = run(config)
    return {"seed": int(seed), "test": metrics["test"], "valid": metrics["valid"],
            "epochs": metrics["epochs"], "best_epoch": metrics.get("best_epoch"),
            "train_seconds": metrics["train_seconds"]}


def median_spread(values):
    """(median, min, max) of a list of numbers."""
    return statistics.median(values), min(values), max(values)


def write_table(name, title, header, rows, payload, command):
    """Prints a Markdown table and saves it with the raw numbers under benchmarks/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Command: `{command}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"command": command, "header": header, "rows": rows, "raw": payload}, indent=2,
        default=float))
    return text
