"""Recommender models as Keras models with their own train_step."""

from cml_tf.models.cml import CML


def build_model(model_config, train, seed=0, **extra):
    """The model a config's ``model`` section names, sized for the training Interactions."""
    kwargs = {k: v for k, v in model_config.to_dict().items() if k != "name"}
    if model_config.name == "cml":
        return CML.from_interactions(train, seed=seed, **kwargs, **extra)
    raise ValueError(f"unknown model.name {model_config.name!r}; known: 'cml'")
