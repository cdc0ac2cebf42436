"""Shared fixtures: the paper's data folder (../shared/data relative to the repository root)."""

import os
import pathlib

import pytest

import cml_tf  # noqa: F401  (routes tf.keras to Keras 2 before any test imports TensorFlow)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("CML_TF_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains a model or a real data set for seconds")


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def citeulike_dir() -> pathlib.Path:
    path = SHARED_DATA / "citeulike-t"
    if not (path / "users.dat").exists():
        pytest.skip(f"citeulike-t data not found at {path} (set CML_TF_SHARED_DATA)")
    return path
