"""Compiles serving_example.cc against the installed TensorFlow wheel (headers and
libtensorflow_cc.so.2 ship inside the pip package), and finds ScaNN's op library.

    python export/build_example.py [OUTPUT]          # default: ./serving_example

Prints the path of the binary and, when ScaNN is installed, the ``--ops_library=`` argument a
ScaNN export needs. Used by tests/export/test_cpp.py and benchmarks/retrieval.py.
"""

import os
import pathlib
import shutil
import subprocess
import sys

SOURCE = pathlib.Path(__file__).resolve().parent / "serving_example.cc"
USAGE = "usage: python export/build_example.py [OUTPUT]   (default OUTPUT: ./serving_example)"


def compiler() -> str | None:
    """g++ or c++ on the PATH, or None."""
    return shutil.which("g++") or shutil.which("c++")


def scann_ops_library() -> pathlib.Path:
    """``_scann_ops.so`` inside the installed ``scann`` wheel (ScaNN's TensorFlow ops)."""
    import scann  # pylint: disable=import-outside-toplevel
    return pathlib.Path(scann.__file__).parent / "scann_ops" / "cc" / "_scann_ops.so"


def build(output, optimize: str = "-O2", timeout: float = 600) -> pathlib.Path:
    """Compiles the example to ``output``; raises RuntimeError with the compiler's message."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or c++) on the PATH")
    output, lib = pathlib.Path(output), pathlib.Path(tf.sysconfig.get_lib())
    command = [cxx, optimize, "-w", *tf.sysconfig.get_compile_flags(), str(SOURCE), "-o",
               str(output), f"-L{lib}", "-l:libtensorflow_cc.so.2",
               "-l:libtensorflow_framework.so.2", f"-Wl,-rpath,{lib}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr[-4000:]}")
    return output


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        print(USAGE, file=sys.stderr)
        return 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up messages
    try:
        binary = build(argv[1] if len(argv) == 2 else "serving_example")
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"built {binary}")
    try:
        print(f"ScaNN exports: --ops_library={scann_ops_library()}")
    except ImportError:
        print("ScaNN is not installed: only the partitioned and brute_force exports will load")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
