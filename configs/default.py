"""The embedded default: CML on synthetic data with planted taste clusters (runs in seconds)."""

from cml_tf.config import get_config  # noqa: F401
