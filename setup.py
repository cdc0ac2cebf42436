"""cml_tf: Collaborative Metric Learning for TensorFlow/Keras (Hsieh et al., WWW 2017)."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

# Why these pins: TensorFlow Recommenders 0.7.x needs Keras 2 (`tf_keras`) as `tf.keras`;
# scann[tf] 1.4.2 is built against TensorFlow 2.20, so TensorFlow and tf-keras stay on 2.20.x.
INSTALL_REQUIRES = [
    "tensorflow~=2.20.0",
    "tf-keras~=2.20.0",
    "tensorflow-recommenders==0.7.7",
    "scann[tf]==1.4.2",
    "numpy>=1.26",
    "pandas>=2.0",
    "scipy>=1.11",
    "absl-py>=2.0",
    "ml-collections>=0.1.1",
    "pyarrow>=14",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "scikit-learn>=1.3",
    # cml_tf.tune: TPE, pruners and the SQLite study storage (tests pass with 4.0.0 and 5.0.0)
    "optuna>=4.0,<6",
]

EXTRAS = {
    "test": [
        "pytest>=8",
        "hypothesis>=6.90",
        "nbclient>=0.10",
        "nbformat>=5.9",
        "ipykernel>=6.25",
        "jinja2>=3.1",  # the notebooks' tables (pandas Styler); CI executes the notebooks
        "tensorflow-serving-api~=2.20.0",
    ],
    # Cross-check columns of benchmarks/table2.py. If LightFM's build fails in pip's isolated
    # build environment: `pip install --no-build-isolation lightfm` (needs setuptools, Cython).
    "bench": [
        "implicit>=0.7.2",
        "lightfm>=1.17",
        "threadpoolctl>=3",
    ],
    "notebook": [
        "jupyter",
        "ipykernel>=6.25",
        "papermill>=2.5",
        "jinja2>=3.1",  # pandas Styler tables in colab/*.ipynb
    ],
}

setup(
    name="cml_tf",
    version="0.1.0",
    description="Collaborative Metric Learning recommenders for TensorFlow/Keras, exported as "
    "SavedModels with an embedded ScaNN index.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8")
    if (HERE / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["cml_tf", "cml_tf.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["cml-tf-train=cml_tf.main:run",
                                      "cml-tf-tune=cml_tf.tune:run"]},
)
