"""benchmarks/throughput.py says which settings of a measurement are the config's (15.15)."""

import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def throughput():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import throughput
        from common import load_config
        yield throughput, load_config("configs/citeulike_t.py")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_rows_name_the_config_only_for_the_configs_own_settings(throughput):
    module, config = throughput
    assert (config.model.num_negatives, config.train.batch_size) == (10, 8192)
    settings = module.fit_settings(config, ["32768"])
    assert settings == [(8192, 20, "≥ 350,000"), (8192, 10, ""), (32768, 20, "")]
    labels = [module.fit_label(config, batch, u) for batch, u, _ in settings]
    assert labels == [
        "model.fit positive pairs/s, U 20 (the config trains with U 10), r 100, "
        "batch 8192 (the config's)",
        "model.fit positive pairs/s, U 10 (the config's), r 100, batch 8192 (the config's)",
        "model.fit positive pairs/s, U 20 (the config trains with U 10), r 100, batch 32768"]
