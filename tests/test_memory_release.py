"""Importing cml_tf before TensorFlow makes TensorFlow give freed memory back to the system
(``TF_ONEDNN_USE_SYSTEM_ALLOCATOR``, see ``cml_tf/__init__``): a long process, such as a study
whose trials each peak high or a run that exports after training, does not keep every peak it
reached."""

import os
import subprocess
import sys

ALLOCATE_AND_FREE = """
import cml_tf
import tensorflow as tf

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))

tf.ones([4])
before = rss_mb()
big = tf.random.uniform([2**28])  # 1 GiB of float32
float(tf.reduce_sum(big))
peak = rss_mb()
del big
print(before, peak, rss_mb())
"""


def fresh_python(code: str, **env) -> str:
    environ = {key: value for key, value in os.environ.items()
               if key != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_freed_gigabyte_goes_back_to_the_system():
    before, peak, after = map(float, fresh_python(ALLOCATE_AND_FREE).split())
    assert peak - before > 900  # the tensor was really there
    assert after - before < 100


def test_the_users_own_allocator_setting_is_kept():
    code = "import os, cml_tf; print(os.environ['TF_ONEDNN_USE_SYSTEM_ALLOCATOR'])"
    assert fresh_python(code, TF_ONEDNN_USE_SYSTEM_ALLOCATOR="false") == "false"
    assert fresh_python(code) == "true"
