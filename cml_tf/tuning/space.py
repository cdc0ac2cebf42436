"""Search spaces written as config: ``config.tune.space.<model>.<section>.<key> = "<spec>"``.

A spec is one string, so that a person can change it from the command line
(``--config.tune.space.cml.model.margin='uniform 0.5 2.5'``):

    "uniform LOW HIGH [STEP]"   a float drawn uniformly from [LOW, HIGH]
    "log LOW HIGH"              a float drawn log-uniformly (LOW > 0): scales, rates, weights
    "int LOW HIGH [STEP]"       an integer in [LOW, HIGH]
    "logint LOW HIGH"           an integer drawn log-uniformly
    "choice A B C"              one of the values (numbers, True/False, or bare words)
    "" or "off"                 not searched: the config's own value is kept

and any of them may end with ``if <path>=<v1>|<v2>``: the parameter is searched only when the
parameter (or config key) ``<path>`` takes one of those values, as Optuna's define-by-run
spaces allow (``model.candidates`` only matters for ``model.sampling=two_stage``). Each spec
becomes the Optuna distribution of the same name; TPE samples from them.

The space of a config is ``config.tune.space[space_name(config)]``: the model's name, and
``cml_f`` for CML with item features.
"""

import ast
import dataclasses
from typing import Optional, Tuple

import optuna
from absl import logging

# CML's options that w4-cml adds (CONTRACTS.md item 5). Until they are keys of the model config,
# the default CML spaces name them and the search skips them with a note. The lead removes this
# list once they land; any other parameter the config does not have is an error.
PENDING_KEYS = frozenset({"model.sampling", "model.sampling_beta", "model.candidates",
                          "model.lambda_item", "train.lr_decay"})

KINDS = ("uniform", "log", "int", "logint", "choice")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched config key: its path ("model.margin"), the Optuna distribution and an
    optional condition (path, allowed values) on another parameter or config key."""

    path: str
    spec: str
    distribution: optuna.distributions.BaseDistribution
    condition: Optional[Tuple[str, tuple]] = None


def space_name(config) -> str:
    """Which entry of ``config.tune.space`` a config searches."""
    name = config.model.name
    return "cml_f" if name == "cml" and config.data.use_features else name


def search_space(config) -> list:
    """The :class:`Param` list of the config's space, checked against the config (ValueError
    for an unknown or malformed spec, an empty or inverted range, a key the config does not
    have, or a value of the wrong type)."""
    name = space_name(config)
    spaces = config.tune.space
    if name not in spaces:
        raise ValueError(f"tune.space has no search space for {name!r} (model.name="
                         f"{config.model.name!r}); known: {', '.join(sorted(spaces.keys()))}. "
                         f"Define config.tune.space.{name} in your config file")
    params = []
    for path, spec in _leaves(spaces[name]):
        where = f"tune.space.{name}.{path}"
        if not isinstance(spec, str):
            raise ValueError(f"{where}: a spec is a string such as 'uniform 0.5 2.0', got "
                             f"{spec!r}")
        if spec.strip().lower() in ("", "off"):
            continue
        if not has_key(config, path):
            if path in PENDING_KEYS:
                logging.info("%s skipped: the config has no %s yet", where, path)
                continue
            raise ValueError(f"{where}: the config has no key {path} (the model "
                             f"{config.model.name!r} does not take it)")
        params.append(parse(spec, where, get(config, path)))
        params[-1] = dataclasses.replace(params[-1], path=path)
    searched = {param.path for param in params}
    for param in params:
        if param.condition and param.condition[0] not in searched and not has_key(
                config, param.condition[0]):
            raise ValueError(f"tune.space.{name}.{param.path}: the condition's key "
                             f"{param.condition[0]} is neither searched nor in the config")
    if not params:
        raise ValueError(f"tune.space.{name} has no parameter to search")
    return _conditions_first(params)


def _conditions_first(params):
    """The params ordered so that a condition's key is drawn before the param it guards."""
    ordered, placed = [], set()
    while len(ordered) < len(params):
        ready = [p for p in params if p.path not in placed and (
            not p.condition or p.condition[0] not in {q.path for q in params} - placed)]
        if not ready:
            raise ValueError("tune.space: the conditions form a cycle: " + ", ".join(
                p.path for p in params if p.path not in placed))
        ordered += ready
        placed.update(p.path for p in ready)
    return ordered


def parse(spec: str, where: str, current=None) -> Param:
    """A :class:`Param` (path left empty) from a spec string; ``current`` is the config's value,
    whose type the spec must match."""
    text, condition = spec, None
    if " if " in spec:
        text, _, rule = spec.partition(" if ")
        key, equals, values = rule.partition("=")
        if not equals or not key.strip() or not values.strip():
            raise ValueError(f"{where}: a condition reads 'if <path>=<v1>|<v2>', got {rule!r}")
        condition = (key.strip(), tuple(_value(v) for v in values.split("|")))
    kind, *args = text.replace(",", " ").split()
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r} in {spec!r}; use one of "
                         f"{', '.join(KINDS)}")
    if kind == "choice":
        distribution = _choice(args, where, spec, current)
    else:
        distribution = _range(kind, args, where, spec, current)
    return Param(path="", spec=spec, distribution=distribution, condition=condition)


def _range(kind, args, where, spec, current):
    integer = kind in ("int", "logint")
    log = kind in ("log", "logint")
    if len(args) not in ((2,) if log else (2, 3)):
        raise ValueError(f"{where}: {kind!r} takes LOW HIGH{'' if log else ' [STEP]'}, got "
                         f"{spec!r}")
    try:
        low, high, *step = (int(a) if integer else float(a) for a in args)
    except ValueError:
        raise ValueError(f"{where}: {spec!r} needs {'integer' if integer else 'numeric'} "
                         "bounds") from None
    if not low < high:
        raise ValueError(f"{where}: empty or inverted range in {spec!r} (LOW must be below "
                         "HIGH)")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs LOW > 0, got {spec!r}")
    if step and not 0 < step[0] <= high - low:
        raise ValueError(f"{where}: STEP must be in (0, HIGH - LOW], got {spec!r}")
    if isinstance(current, (bool, str)):
        raise ValueError(f"{where}: the config's value {current!r} is not a number; use "
                         "'choice ...'")
    if isinstance(current, int) and not integer:
        raise ValueError(f"{where}: the config holds an integer ({current!r}); use 'int' or "
                         "'logint'")
    cls = optuna.distributions.IntDistribution if integer else (
        optuna.distributions.FloatDistribution)
    return cls(low, high, log=log, step=step[0] if step else (1 if integer else None))


def _choice(args, where, spec, current):
    if not args:
        raise ValueError(f"{where}: 'choice' needs at least one value, got {spec!r}")
    values = tuple(_value(a) for a in args)
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: repeated values in {spec!r}")
    if current is not None:
        values = tuple(_coerce(v, current, where) for v in values)
    return optuna.distributions.CategoricalDistribution(values)


def _coerce(value, current, where):
    """``value`` as the type of the config's ``current`` value (an int is a valid float)."""
    if isinstance(current, bool) or isinstance(value, bool):
        ok = isinstance(current, bool) and isinstance(value, bool)
    elif isinstance(current, float) and isinstance(value, int):
        return float(value)
    else:
        ok = type(value) is type(current)
    if not ok:
        raise ValueError(f"{where}: {value!r} is not of the config value's type "
                         f"({type(current).__name__}, {current!r})")
    return value


def _value(token: str):
    token = token.strip()
    try:
        return ast.literal_eval(token)
    except (ValueError, SyntaxError):
        return token


def _leaves(section, prefix=""):
    for key in section.keys():
        value = section[key]
        path = f"{prefix}{key}"
        if hasattr(value, "keys"):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def has_key(config, path: str) -> bool:
    node = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def get(config, path: str):
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def assign(config, path: str, value):
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


def _active(param, values, config) -> bool:
    """Whether ``param``'s condition holds for the values drawn so far (else the config's)."""
    if not param.condition:
        return True
    key, allowed = param.condition
    return values.get(key, get(config, key) if has_key(config, key) else None) in allowed


def suggest(trial, params, config) -> dict:
    """{path: value} drawn by ``trial`` for the params whose condition holds."""
    values = {}
    for param in params:
        if not _active(param, values, config):
            continue
        d = param.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            values[param.path] = trial.suggest_categorical(param.path, d.choices)
        elif isinstance(d, optuna.distributions.IntDistribution):
            values[param.path] = trial.suggest_int(param.path, d.low, d.high, step=d.step,
                                                   log=d.log)
        else:
            values[param.path] = trial.suggest_float(param.path, d.low, d.high, step=d.step,
                                                     log=d.log)
    return values


def config_values(params, config) -> dict:
    """The config's own values of the params that a study can start from (inside the
    distribution, condition holding): the first trial of a new study."""
    values = {}
    for param in params:
        value = get(config, param.path)
        if _active(param, values, config) and contains(param.distribution, value):
            values[param.path] = value
    return values


def contains(distribution, value) -> bool:
    """Whether ``value`` is one the distribution can draw."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not distribution.low <= value <= distribution.high:
        return False
    step = distribution.step
    return step is None or abs((value - distribution.low) / step - round(
        (value - distribution.low) / step)) < 1e-9
