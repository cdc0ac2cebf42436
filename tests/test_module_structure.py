"""Issue 15.17: exporting and the pictures read a config's data through the data layer, not
through training (``cml_tf.train`` imports both: importing it from them was a circle)."""

import subprocess
import sys


def test_export_and_viz_do_not_import_training():
    code = ("import sys, cml_tf.export, cml_tf.viz, cml_tf.data.from_config\n"
            "print('cml_tf.train' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
