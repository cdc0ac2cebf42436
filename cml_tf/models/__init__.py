"""Recommender models as Keras models: CML and the baseline zoo of the paper's Table 2.

Every model answers ``score(users)``, ``recommend``, ``similar_items``, ``known_items`` and exposes
``user_vectors`` / ``item_vectors`` compared under its ``metric`` ("squared_l2" for CML,
"dot_product" for the rest), which is all that evaluation and the SavedModel export need.
"""

import difflib
import inspect
import re

from cml_tf.models.cml import CML
from cml_tf.models.hybrid import CDLMLP, FM, VBPRMLP, FeatureMLP
from cml_tf.models.mf import BPRMF, WARPMF
from cml_tf.models.sampled import RankingModel, SampledPairwiseModel
from cml_tf.models.wrmf import WRMF

MODELS = {"cml": CML, "bpr": BPRMF, "warp": WARPMF, "wrmf": WRMF, "fm": FM, "vbpr": VBPRMLP,
          "cdl": CDLMLP}

__all__ = ["CML", "BPRMF", "WARPMF", "WRMF", "FM", "VBPRMLP", "CDLMLP", "FeatureMLP",
           "RankingModel", "SampledPairwiseModel", "MODELS", "build_model"]


def build_model(model_config, train, seed=0, **extra):
    """The model a config's ``model`` section names, sized for the training Interactions.

    Every key of the section except ``name`` is passed to the model's ``from_interactions``."""
    kwargs = {k: v for k, v in model_config.to_dict().items() if k != "name"}
    if model_config.name not in MODELS:
        raise ValueError(f"unknown model.name {model_config.name!r}; known: "
                         f"{', '.join(repr(name) for name in MODELS)}")
    model_class = MODELS[model_config.name]
    try:
        return model_class.from_interactions(train, seed=seed, **kwargs, **extra)
    except TypeError as error:
        key = _unexpected_keyword(error)
        if key not in kwargs:
            raise
        raise ValueError(_not_a_setting(model_config.name, model_class, key)) from None


def _unexpected_keyword(error: TypeError):
    """The keyword a constructor refused: Python's own message or Keras's
    ``TypeError("Keyword argument not understood:", key)``; None for any other TypeError."""
    if len(error.args) == 2 and str(error.args[0]).startswith("Keyword argument not understood"):
        return error.args[1]
    found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    return found.group(1) if found else None


def _not_a_setting(name: str, model_class, key: str) -> str:
    """The message for a ``model.<key>`` the model does not take: its settings, and the
    nearest of them when the key looks like a typo."""
    settings = set()
    for cls in model_class.__mro__:
        if cls.__module__.startswith("cml_tf.") and "__init__" in vars(cls):
            settings.update(p.name for p in inspect.signature(cls.__init__).parameters.values()
                            if p.kind is p.POSITIONAL_OR_KEYWORD)
    settings = {name for name in settings if not name.startswith("n_")}  # sizes from the data
    settings -= {"self", "item_features", "known_positives", "seed", "jit_sampling"}
    close = difflib.get_close_matches(key, settings, n=1)
    hint = f"; did you mean model.{close[0]}?" if close else ""
    return (f"model.{key} is not a setting of model.name={name!r}{hint} (its settings: "
            f"{', '.join(sorted(settings))})")
