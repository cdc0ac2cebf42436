"""Command line: ``python -m cml_tf.main --config=configs/<x>.py --workdir=DIR [--config.a.b=v]``.

With no flags it trains the embedded default (synthetic data) into a fresh temporary workdir
and says where everything went; ``--help`` lists the flags and the config's sections. Bad input
(a missing or broken config file, an unknown config key, a value out of range, a missing data
file, a workdir holding another run) ends with one line ``error: ...`` on stderr and exit
status 1, never a traceback.

The config file is loaded here rather than by ``config_flags.DEFINE_config_file``, which lets a
broken file escape as a traceback; the loaded ConfigDict is then handed to ml_collections'
``DEFINE_config_dict``, which applies the ``--config.<key>=<value>`` overrides with its type
checks. Flags are parsed into a fresh ``absl.flags.FlagValues`` per call, so :func:`main` can be
called more than once in a process (the tests do).
"""

import dataclasses
import difflib
import importlib.util
import logging as std_logging
import os
import pathlib
import re
import sys
import tempfile
import textwrap
import traceback
from typing import Optional, Sequence

import cml_tf


def quiet_tensorflow_startup():
    """On a command line even TensorFlow's C++ error-level start-up lines (e.g. "failed call to
    cuInit" on a machine without a GPU) are noise: hide them unless the user set
    ``TF_CPP_MIN_LOG_LEVEL`` (before ``import cml_tf``) or TensorFlow already started."""
    if not cml_tf._USER_SET_TF_LOG_LEVEL and "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


quiet_tensorflow_startup()

from absl import flags, logging  # noqa: E402
from ml_collections import ConfigDict, config_flags  # noqa: E402

DEFAULT_CONFIG = str(pathlib.Path(cml_tf.__file__).with_name("config.py"))
HELP_FLAGS = ("-h", "-help", "--help", "-?", "--helpshort", "--helpfull")
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")

USAGE = """\
usage: python -m cml_tf.main [--config=FILE] [--workdir=DIR] [--overwrite]
                             [--config.<section>.<key>=VALUE ...]

Trains and evaluates the model a config describes and writes everything into --workdir
(config.json, metrics.json, checkpoints/, tensorboard/, pictures, saved_model/).

flags:
  --config=FILE   experiment config: a .py file whose get_config() returns an
                  ml_collections.ConfigDict (default: {default})
  --config.<section>.<key>=VALUE
                  override one key of the config, e.g. --config.train.epochs=20
  --workdir=DIR   where outputs go (default: a new temporary folder)
  --overwrite     replace a finished run in --workdir
  --help          this text
"""


class CommandLineError(ValueError):
    """A flag, a config file or a config override that the command cannot use."""


@dataclasses.dataclass
class Options:
    config: ConfigDict
    workdir: Optional[str]
    overwrite: bool
    flag_values: Optional[flags.FlagValues] = None  # every parsed flag, a command's own too


# ---- the config file ------------------------------------------------------------------------


def load_config_file(spec: str) -> ConfigDict:
    """``get_config()`` of the config file ``spec`` (``FILE`` or ``FILE:ARGUMENT``, as
    ml_collections reads it); CommandLineError naming the file and line of any problem."""
    if not spec:
        raise CommandLineError("--config needs a file: a .py file with get_config()")
    name, _, argument = spec.partition(":")
    path = pathlib.Path(name).expanduser()
    if not path.exists():
        raise CommandLineError(f"config file {name} does not exist")
    if not path.is_file():
        raise CommandLineError(f"config file {name} is a folder, expected a .py file")
    try:
        source = path.read_bytes()
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        raise CommandLineError(f"config file {name}, line {error.lineno}: {error.msg}") from None
    except (OSError, ValueError) as error:  # unreadable, or NUL bytes
        raise CommandLineError(f"config file {name}: cannot be read ({error})") from None
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(f"cml_tf_config_{path.stem}", loader=None,
                                        origin=str(path)))
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # as an import would (dataclasses look it up)
    try:
        exec(code, module.__dict__)  # pylint: disable=exec-used
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise CommandLineError(f"config file {name} defines no get_config() function")
        config = get_config(*([argument] if argument else []))
    except CommandLineError:
        raise
    except Exception as error:  # pylint: disable=broad-except  (the user's code failed)
        raise CommandLineError(f"config file {name}{_line_in(error, path)}: "
                               f"{type(error).__name__}: {one_line(error)}") from None
    if not isinstance(config, ConfigDict):
        raise CommandLineError(f"config file {name}: get_config() returned "
                               f"{type(config).__name__}, expected an ml_collections.ConfigDict")
    if path.resolve() != pathlib.Path(DEFAULT_CONFIG).resolve():
        _check_keys(config, load_config_file(DEFAULT_CONFIG), name)
    return config


def _check_keys(config: ConfigDict, default: ConfigDict, name: str, prefix: str = ""):
    """CommandLineError for a key the default config does not have (a typo in a config file
    adds a key that nothing reads). ``model`` is left out: every model takes its own keys."""
    for key, value in config.items():
        if not prefix and key == "model":
            continue
        if key not in default:
            close = difflib.get_close_matches(key, list(default.keys()), n=1)
            raise CommandLineError(
                f"config file {name} sets the unknown key '{prefix}{key}'"
                + (f" (did you mean '{prefix}{close[0]}'?)" if close else "")
                + "; every key: cml_tf/config.py")
        if isinstance(value, ConfigDict) and isinstance(default[key], ConfigDict):
            _check_keys(value, default[key], name, f"{prefix}{key}.")


def _line_in(error: Exception, path: pathlib.Path) -> str:
    """", line N" of the innermost traceback frame in ``path`` (empty when there is none)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if pathlib.Path(frame.filename) == path]
    return f", line {frames[-1].lineno}" if frames else ""


def _check_override(config: ConfigDict, argument: str):
    """CommandLineError naming an override's unknown key, with ml_collections' hint."""
    path = _OVERRIDE.match(argument).group(1)
    if "[" in path:  # indexed paths: ml_collections checks them itself
        return
    node = config
    for key in path.split("."):
        try:
            node = getattr(node, key)
        except (AttributeError, KeyError) as error:
            hint = re.search(r"did you mean .*", one_line(error), re.IGNORECASE)
            raise CommandLineError(
                f"unknown key '{key}' in {argument.split('=', 1)[0]}"
                + (f": {hint.group(0)}" if hint else " (every key: cml_tf/config.py)")) from None


# ---- flags ------------------------------------------------------------------------------------


def _split_config_flag(argv: Sequence[str]):
    """(the --config value or None, argv without it); the last --config wins."""
    spec, rest = None, [argv[0]]
    arguments = iter(argv[1:])
    for argument in arguments:
        match = _CONFIG_FLAG.match(argument)
        if not match:
            rest.append(argument)
        elif match.group(1) == "=":
            spec = argument.split("=", 1)[1]
        else:
            spec = next(arguments, "")
    return spec, rest


def parse_command_line(argv: Sequence[str], define_flags=None) -> Options:
    """The options of a command line (``argv[0]`` is the program); CommandLineError if bad.

    ``define_flags(flag_values)`` defines a command's own flags beside --config, --workdir and
    --overwrite (``cml_tf.tune`` adds its budget); they are in ``Options.flag_values``.
    """
    spec, rest = _split_config_flag(list(argv))
    config = load_config_file(DEFAULT_CONFIG if spec is None else spec)
    for argument in rest[1:]:
        if _OVERRIDE.match(argument):
            _check_override(config, argument)
    flag_values = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Where outputs go (default: a new temporary folder).",
                        flag_values=flag_values)
    flags.DEFINE_bool("overwrite", False, "Replace a finished run in --workdir.",
                      flag_values=flag_values)
    if define_flags is not None:
        define_flags(flag_values)
    try:
        config_flags.DEFINE_config_dict(
            "config", config, "Experiment config; override any key with "
            "--config.<key>=<value>.", flag_values=flag_values, lock_config=True, sys_argv=rest)
        unparsed = flag_values(rest)
    except flags.Error as error:
        raise CommandLineError(one_line(error)) from None
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # from ml_collections
        raise CommandLineError(f"bad --config override: {one_line(error)}") from None
    if len(unparsed) > 1:
        raise CommandLineError(f"unexpected arguments: {' '.join(unparsed[1:])} (flags are "
                               "written --name=value)")
    if flag_values.workdir:
        path = pathlib.Path(flag_values.workdir).expanduser()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise CommandLineError(f"--workdir {flag_values.workdir}: {existing} is a file, "
                                   "expected a folder")
    return Options(flag_values.config, flag_values.workdir, flag_values.overwrite,
                   flag_values)


def help_text(argv: Sequence[str], usage: str = USAGE) -> str:
    """``usage``, and the top-level sections of the config (with their keys)."""
    spec, _ = _split_config_flag(list(argv))
    try:
        config = load_config_file(spec or DEFAULT_CONFIG)
    except CommandLineError:
        spec, config = None, load_config_file(DEFAULT_CONFIG)
    lines = [usage.format(default=DEFAULT_CONFIG),
             f"config sections of {spec or 'the default config'} (what each key means: "
             f"cml_tf/config.py, {DEFAULT_CONFIG}):"]
    for section, value in config.items():
        keys = ", ".join(value.keys()) if isinstance(value, ConfigDict) else repr(value)
        lines.append(textwrap.fill(keys, width=100, initial_indent=f"  {section:<9} ",
                                   subsequent_indent=" " * 12))
    return "\n".join(lines)


# ---- the command -----------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv``); returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    if any(argument in HELP_FLAGS for argument in argv[1:]):
        print(help_text(argv))
        return 0
    try:
        options = parse_command_line(argv)
    except CommandLineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # pylint: disable=import-outside-toplevel  (TensorFlow loads only for a valid command)
    from cml_tf import train
    from cml_tf.data.errors import DataError
    from cml_tf.data.from_config import absolute_paths
    try:
        absolute_paths(options.config.data)  # config.json must not depend on the folder
        workdir = options.workdir or tempfile.mkdtemp(prefix="cml_tf_")
        logging.info("workdir: %s", workdir)
        metrics = train.train_and_evaluate(options.config, workdir, overwrite=options.overwrite)
    except (DataError, ValueError, OSError, train.WorkdirError, train.TrainingDiverged) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except lost_task_errors() as error:
        print(f"error: {cluster_error(error)}", file=sys.stderr)
        return 1
    print(summary(metrics, workdir))
    return 0


def lost_task_errors() -> tuple:
    """What the runtime raises in the chief when a task of its cluster dies or cannot be
    reached."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError


def cluster_error(error: Exception) -> str:
    """What a lost task of a cluster (a worker or ps task that died or cannot be reached) looks
    like to the chief: the runtime's first line and what to do."""
    first = (getattr(error, "message", "") or str(error)).strip().splitlines()
    return (f"a task of the cluster was lost or cannot be reached ({type(error).__name__}: "
            f"{first[0] if first else 'no message'}); start it again and rerun the same command "
            "to resume from the last checkpoint")


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


def use_absl_logging(level=logging.INFO):
    """absl's log format on stderr, INFO lines from this package only (what ``app.run`` would
    set up; the commands here parse their own flags)."""
    logging.use_absl_handler()
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl logging reads its own flags' defaults
    logging.set_verbosity(level)
    logging.get_absl_handler().addFilter(OwnInfoOnly())


def run():
    """Console-script entry point."""
    use_absl_logging()
    sys.exit(main())


if __name__ == "__main__":
    run()
