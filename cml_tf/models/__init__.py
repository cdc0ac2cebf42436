"""Recommender models as Keras models: CML and the baseline zoo of the paper's Table 2.

Every model answers ``score(users)``, ``recommend``, ``similar_items``, ``known_items`` and exposes
``user_vectors`` / ``item_vectors`` compared under its ``metric`` ("squared_l2" for CML,
"dot_product" for the rest), which is all that evaluation and the SavedModel export need.
"""

from cml_tf.models.cml import CML
from cml_tf.models.ease import EASE
from cml_tf.models.hybrid import CDLMLP, FM, VBPRMLP, FeatureMLP
from cml_tf.models.mf import BPRMF, WARPMF
from cml_tf.models.sampled import RankingModel, SampledPairwiseModel
from cml_tf.models.wrmf import WRMF

MODELS = {"cml": CML, "bpr": BPRMF, "warp": WARPMF, "wrmf": WRMF, "ease": EASE, "fm": FM,
          "vbpr": VBPRMLP, "cdl": CDLMLP}

__all__ = ["CML", "BPRMF", "WARPMF", "WRMF", "EASE", "FM", "VBPRMLP", "CDLMLP", "FeatureMLP",
           "RankingModel", "SampledPairwiseModel", "MODELS", "build_model"]


def build_model(model_config, train, seed=0, **extra):
    """The model a config's ``model`` section names, sized for the training Interactions.

    Every key of the section except ``name`` is passed to the model's ``from_interactions``."""
    kwargs = {k: v for k, v in model_config.to_dict().items() if k != "name"}
    if model_config.name not in MODELS:
        raise ValueError(f"unknown model.name {model_config.name!r}; known: "
                         f"{', '.join(repr(name) for name in MODELS)}")
    return MODELS[model_config.name].from_interactions(train, seed=seed, **kwargs, **extra)
