"""cml_tf: Collaborative Metric Learning (Hsieh et al., WWW 2017) for TensorFlow/Keras.

Importing this package routes ``tf.keras`` to Keras 2 (the ``tf_keras`` package), which
TensorFlow Recommenders needs, by setting ``TF_USE_LEGACY_KERAS=1`` before TensorFlow resolves
``tf.keras``. TensorFlow itself is imported lazily: ``import cml_tf`` is fast and silent, and the
heavy modules load on first use (``cml_tf.models``, ``cml_tf.train``, ...).
"""

import importlib
import os
import sys

__version__ = "0.1.0"

_TRUE = ("1", "true", "True")
_USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ


def _route_tf_keras_to_keras2():
    value = os.environ.get("TF_USE_LEGACY_KERAS")
    if value is not None and value not in _TRUE:
        raise ImportError(
            f"cml_tf needs Keras 2 as tf.keras, but TF_USE_LEGACY_KERAS={value!r} is set. "
            "Unset it or set TF_USE_LEGACY_KERAS=1, then restart the Python process.")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    # C++ start-up chatter (oneDNN notices, ...) is not ours to print; users can override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    loader = tf.__dict__.get("keras")
    resolved = getattr(loader, "_tfll_initialized", False) if loader is not None else False
    if resolved and getattr(loader, "_tfll_keras_version", None) != "tf_keras":
        raise ImportError(
            "tf.keras already resolved to Keras 3 in this process, and cml_tf needs Keras 2 "
            "(tf_keras). Restart the Python process (in Colab: Runtime > Restart session) and "
            "import cml_tf before touching tf.keras, or set the environment variable "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow.")


_route_tf_keras_to_keras2()

_SUBMODULES = (
    "callbacks", "data", "evaluation", "export", "layers", "metrics", "models", "train", "viz",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
