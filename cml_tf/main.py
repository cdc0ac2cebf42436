"""Command line: ``python -m cml_tf.main --config=configs/<x>.py --workdir=DIR [--config.a.b=v]``.

With no flags it trains the embedded default (synthetic data) into a fresh temporary workdir
and says where everything went. Bad input (a missing file, an unknown config key, a value out of
range, a workdir holding another run) ends with one readable line and a non-zero exit status.
"""

import logging as std_logging
import os
import pathlib
import sys
import tempfile

import cml_tf

if not cml_tf._USER_SET_TF_LOG_LEVEL and "tensorflow" not in sys.modules:
    # On the command line even the C++ error-level start-up lines (e.g. "failed call to cuInit"
    # on a machine without a GPU) are noise; TF_CPP_MIN_LOG_LEVEL set by the user wins.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

DEFAULT_CONFIG = str(pathlib.Path(cml_tf.__file__).with_name("config.py"))
FLAGS = flags.FLAGS


def define_flags():
    config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Experiment config file (a .py file with get_config()); "
        "override any key with --config.<key>=<value>.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where outputs go (default: a new temporary folder).")
    flags.DEFINE_bool("overwrite", False, "Replace a finished run in --workdir.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from cml_tf import train  # pylint: disable=import-outside-toplevel
    from cml_tf.data.errors import DataError  # pylint: disable=import-outside-toplevel
    try:
        config = FLAGS.config
        workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="cml_tf_")
        logging.info("workdir: %s", workdir)
        metrics = train.train_and_evaluate(config, workdir, overwrite=FLAGS.overwrite)
    except (DataError, ValueError, OSError, train.WorkdirError,
            train.TrainingDiverged) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    print(summary(metrics, workdir))
    return 0


def one_line(error: Exception) -> str:
    """An exception's message on one line (ml_collections' messages span several)."""
    while error.args and isinstance(error.args[0], Exception):
        error = error.args[0]  # ml_collections wraps a KeyError in an AttributeError
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    text = text.replace("\\'", "'").replace("\\n", " ")
    return " ".join(text.split())


def summary(metrics: dict, workdir: str) -> str:
    """What a person wants to see at the end: the figures and where the outputs are."""
    part = "test" if "test" in metrics else "valid"
    figures = metrics.get(part, {})
    lines = ["", f"done: {metrics['epochs']} epochs, {metrics['train_seconds']:.1f}s of training "
             f"({metrics['train_pairs_per_second']:,.0f} positive pairs/s)"]
    if figures:
        lines.append(f"  {part}: " + ", ".join(f"{k} {figures[k]:.4f}" for k in (
            "recall@10", "recall@50", "recall@100", "ndcg@50") if k in figures))
    lines += [f"  WARNING: {warning}" for warning in metrics.get("warnings", ())]
    lines.append(f"  outputs in {workdir}:")
    for path in sorted(pathlib.Path(workdir).iterdir()):
        lines.append(f"    {path.name}{'/' if path.is_dir() else ''}")
    lines.append(f"  tensorboard --logdir {pathlib.Path(workdir) / 'tensorboard'}")
    return "\n".join(lines)


class OwnInfoOnly(std_logging.Filter):
    """INFO lines from this package (and ``extra_dirs``) only; warnings and errors from anywhere."""

    def __init__(self, *extra_dirs):
        super().__init__()
        self._sources = (str(pathlib.Path(cml_tf.__file__).parent),) + tuple(map(str, extra_dirs))

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(self._sources)


def run():
    """Console-script entry point."""
    try:
        define_flags()  # ml_collections applies --config.* overrides here
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        kind = "unknown key " if isinstance(error, (AttributeError, KeyError)) else ""
        sys.exit(f"error: bad --config override: {kind}{one_line(error)}")
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(OwnInfoOnly())
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
