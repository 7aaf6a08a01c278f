"""Accuracy floors on real MNIST: training must reach a stated accuracy on the real test split."""

import pytest

from minicnn.data import DataError, load_dataset
from minicnn.train import TrainConfig, fit


@pytest.mark.slow
def test_one_epoch_on_10k_real_mnist_reaches_97_percent(tmp_path):
    try:
        load_dataset("mnist", "test", download=False, limit=1)
    except DataError as error:
        pytest.skip(f"real MNIST not available (set MINICNN_DATA_DIR): {error}")
    config = TrainConfig(dataset="mnist", model="mnist-cnn", epochs=1, limit=10_000,
                         val_size=0, seed=0, lr=0.05)
    result = fit(config, tmp_path / "mnist", progress=False, log=None)
    assert result["test_accuracy"] >= 0.97, result["test_accuracy"]
