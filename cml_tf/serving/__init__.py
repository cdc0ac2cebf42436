"""What goes into an exported SavedModel (see ``cml_tf.export`` for the export itself).

* :mod:`cml_tf.serving.spec` -- :class:`ExportSpec`, the small interface between a model and
  the export (ids, vectors, metric, known items, optional item-feature embedder).
* :mod:`cml_tf.serving.module` -- the ``tf.Module`` with the serving signatures.
* :mod:`cml_tf.serving.check` -- the smoke test, the exact reference and the index report.
"""

from cml_tf.serving.spec import ExportSpec, spec_from_model

__all__ = ["ExportSpec", "spec_from_model"]
