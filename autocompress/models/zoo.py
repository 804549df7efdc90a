"""The model zoo: small, deterministic classifiers of common architectures, with data.

Every factory (``lenet5()``, ``resnet20()``...) builds the same weights on every call
without touching the caller's random state, and returns an eval-mode model with 10
outputs.  A freshly built network is shaped to behave like a trained one on its input
distribution (``gaussian_inputs``): see ``build``.

Each model has a ``<name>_data()`` function giving ``(train, val, test)`` batches of
seeded Gaussian inputs labelled by the model itself, so the zoo runs offline from the
command line and accuracy means agreement with the uncompressed model (100% for it)::

    autocompress search --model autocompress.models.zoo:resnet20 --data autocompress.models.zoo:resnet20_data
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import TensorBatches

SEED = 0
"""The seed every factory builds its weights with."""

CLASSES = 10
MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)
CALIBRATION_SAMPLES = 256
CHANNEL_SPREAD = 1.0
"""Log-normal sigma of the per-channel scales that make channels unequally important."""
LOGIT_STD = 4.0
MARGIN = 2.0
"""The least lead of the top logit over the next on a labelled input (half of ``LOGIT_STD``)."""
MAX_CLASS_SHARE = 0.2
"""The largest share of a split one class may take: twice an even share."""
MAX_DRAWS = 20
"""How many times a split's size of inputs ``labelled_data`` may draw to fill the split."""
SMOOTH_SHARE = 0.64
"""The share of each input pixel's variance that is spatially smooth."""
SPLIT_SIZES = (512, 256, 256)
BATCH_SIZE = 64

Splits = tuple[TensorBatches, TensorBatches, TensorBatches]


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: ``factory()`` builds the model; it takes ``(N, *input_shape)`` inputs."""

    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    description: str


# ----- building blocks ---------------------------------------------------------------
def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding for odd kernels) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LeNet5(nn.Module):
    """LeCun et al. 1998 with ReLU and max pooling: (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(torch.flatten(self.features(x), 1)))


class LeNet5Caffe(nn.Module):
    """The Caffe LeNet-5 of the ADMM pruning papers: (N, 1, 28, 28) -> conv5 20 -> max pool
    -> conv5 50 -> max pool -> 800 -> 500 (ReLU) -> 10; 430,500 weights."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.head = nn.Linear(500, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2)), 2)
        return self.head(F.relu(self.fc1(torch.flatten(x, 1))))


class LeNet300100(nn.Module):
    """The LeNet-300-100 MLP: (N, 1, 28, 28) -> flatten -> 300 -> 100 -> 10."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.head = nn.Linear(100, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class VGGSmall(nn.Module):
    """VGG-style: three stages of conv3x3-BN-ReLU pairs with max pooling, then two Linears."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = CIFAR_SHAPE[0]
        for width in widths:
            layers += [conv_bn_relu(cin, width), conv_bn_relu(width, width), nn.MaxPool2d(2)]
            cin = width
        self.features = nn.Sequential(*layers)
        side = CIFAR_SHAPE[1] // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Linear(cin * side * side, 128), nn.ReLU(inplace=True))
        self.head = nn.Linear(128, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(torch.flatten(self.features(x), 1)))


class BasicBlock(nn.Module):
    """The ResNet basic block; a 1x1 conv + BN shortcut where the shape changes (option B)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """The CIFAR ResNet-20 of He et al. 2016: 3 stages x 3 basic blocks, 16/32/64 channels."""

    def __init__(self, blocks: int = 3, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.stem = conv_bn_relu(CIFAR_SHAPE[0], widths[0])
        stages, cin = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*(BasicBlock(cin if b == 0 else width, width, stride if b == 0 else 1)
                                          for b in range(blocks))))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped at ratio 1), 3x3 depthwise, 1x1 linear
    projection; the input is added back where the stride is 1 and the widths match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2Small(nn.Module):
    """A narrow MobileNetV2 for 32x32 inputs: (expand, width, blocks, stride) per stage."""

    def __init__(self, stages: tuple[tuple[int, int, int, int], ...] = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2),
                                                                         (4, 64, 2, 2)), last: int = 128):
        super().__init__()
        cin = 16
        self.stem = nn.Sequential(nn.Conv2d(CIFAR_SHAPE[0], cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin),
                                  nn.ReLU6(inplace=True))
        blocks = []
        for expand, width, count, stride in stages:
            for b in range(count):
                blocks.append(InvertedResidual(cin, width, stride if b == 0 else 1, expand))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.last = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True))
        self.head = nn.Linear(last, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.last(self.blocks(self.stem(x))).mean(dim=(2, 3)))


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 giving ``growth`` new channels, concatenated to its input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 then 2x2 average pooling, between dense blocks."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetSmall(nn.Module):
    """A DenseNet for 32x32 inputs: stem, dense block, transition, dense block, BN-ReLU,
    global average pool, Linear."""

    def __init__(self, stem: int = 16, growth: int = 8, layers: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(CIFAR_SHAPE[0], stem, 3, padding=1, bias=False)
        width, modules = stem, []
        for block in range(2):
            for _ in range(layers):
                modules.append(DenseLayer(width, growth))
                width += growth
            if block == 0:
                modules.append(Transition(width, width // 2))
                width //= 2
        self.features = nn.Sequential(*modules)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    """Hu et al. 2018: global pool -> Linear reduce -> ReLU -> Linear expand -> sigmoid,
    then scale each channel of the input."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.reduce = nn.Linear(channels, channels // reduction)
        self.expand = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]


class SEBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, squeeze-excite, plus the identity, then ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(channels, channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.se = SqueezeExcite(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.se(self.body(x)))


class SENet(nn.Module):
    """A small SE-ResNet: stem, then per stage a strided conv and one SE block, 16/32/64 wide."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        stages, cin = [], CIFAR_SHAPE[0]
        for i, width in enumerate(widths):
            stages += [conv_bn_relu(cin, width, stride=1 if i == 0 else 2), SEBlock(width)]
            cin = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(cin, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MHSA(LN(x)), then x + MLP(LN(x)) (GELU)."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTTiny(nn.Module):
    """A Vision Transformer for 32x32 inputs: 4x4 patches by a strided Conv2d, a class
    token and learned position embeddings, encoder blocks, LayerNorm, Linear head."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, hidden: int = 128, patch: int = 4):
        super().__init__()
        tokens = (CIFAR_SHAPE[1] // patch) * (CIFAR_SHAPE[2] // patch)
        self.patch_embed = nn.Conv2d(CIFAR_SHAPE[0], dim, patch, stride=patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


# ----- deterministic, trained-like construction ----------------------------------------
def build(module: Callable[[], nn.Module], input_shape: tuple[int, ...], seed: int = SEED) -> nn.Module:
    """``module()`` built under ``seed`` (the caller's random state is left as it was) and
    made to behave like a trained classifier on ``gaussian_inputs`` of ``input_shape``.

    A random network weighs all its channels alike, so removing any of them changes its
    function completely; a trained one concentrates it in fewer, stronger channels.  So
    every normalisation weight (in a model without normalisation layers: every Conv2d and
    Linear output channel but the head's) is scaled by a log-normal factor of sigma
    ``CHANNEL_SPREAD``.  Then BatchNorm running statistics are measured on the inputs,
    and the ``head`` is shifted and scaled so that every logit has mean 0 and standard
    deviation ``LOGIT_STD`` on them, which spreads the labels over the classes.
    Returns the model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = module()
        _spread_channels(model)
    x = gaussian_inputs(CALIBRATION_SAMPLES, input_shape, torch.Generator().manual_seed(seed))
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in batchnorms:
            bn.momentum = None  # a cumulative average: one pass gives the exact statistics
            bn.train()
        model(x)
        for bn in batchnorms:
            bn.momentum = 0.1
        logits = model.eval()(x)
        scale = LOGIT_STD / logits.std(dim=0)
        model.head.bias.sub_(logits.mean(dim=0)).mul_(scale)
        model.head.weight.mul_(scale[:, None])
    return model


def _spread_channels(model: nn.Module) -> None:
    norms = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))]
    if norms:
        targets = [(m.weight, None) for m in norms]
    else:
        targets = [(m.weight, m.bias) for m in model.modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not model.head]
    with torch.no_grad():
        for weight, bias in targets:
            scale = torch.exp(CHANNEL_SPREAD * torch.randn(weight.shape[0]))
            weight.mul_(scale.view(-1, *[1] * (weight.dim() - 1)))
            if bias is not None:
                bias.mul_(scale)


def lenet5() -> nn.Module:
    """LeNet-5 (conv5-pool-conv5-pool-fc120-fc84-fc10, ReLU) for (N, 1, 28, 28) inputs."""
    return build(LeNet5, MNIST_SHAPE)


def lenet5_caffe() -> nn.Module:
    """The Caffe LeNet-5 (conv5 20-pool-conv5 50-pool-fc500-fc10, ReLU after fc500 only) for
    (N, 1, 28, 28) inputs."""
    return build(LeNet5Caffe, MNIST_SHAPE)


def lenet300_100() -> nn.Module:
    """The LeNet-300-100 MLP for (N, 1, 28, 28) inputs."""
    return build(LeNet300100, MNIST_SHAPE)


def vgg_small() -> nn.Module:
    """A small VGG (six conv3x3-BN-ReLU, three max pools, two Linears) for (N, 3, 32, 32)."""
    return build(VGGSmall, CIFAR_SHAPE)


def resnet20() -> nn.Module:
    """The CIFAR ResNet-20 (option-B shortcuts) for (N, 3, 32, 32) inputs."""
    return build(ResNet20, CIFAR_SHAPE)


def mobilenetv2_small() -> nn.Module:
    """A narrow MobileNetV2 (inverted residuals, depthwise convs, ReLU6) for (N, 3, 32, 32)."""
    return build(MobileNetV2Small, CIFAR_SHAPE)


def densenet_small() -> nn.Module:
    """A small DenseNet (two dense blocks of three layers, one transition) for (N, 3, 32, 32)."""
    return build(DenseNetSmall, CIFAR_SHAPE)


def se_net() -> nn.Module:
    """A small SE-ResNet (squeeze-excite residual blocks) for (N, 3, 32, 32) inputs."""
    return build(SENet, CIFAR_SHAPE)


def vit_tiny() -> nn.Module:
    """A two-block Vision Transformer (nn.MultiheadAttention) for (N, 3, 32, 32) inputs."""
    return build(ViTTiny, CIFAR_SHAPE)


MODELS: dict[str, ZooModel] = {
    "lenet5": ZooModel(lenet5, MNIST_SHAPE, "LeNet-5: two conv5+pool stages, three Linears"),
    "lenet5_caffe": ZooModel(lenet5_caffe, MNIST_SHAPE, "Caffe LeNet-5 of the ADMM papers: conv 20-50, fc 500"),
    "lenet300_100": ZooModel(lenet300_100, MNIST_SHAPE, "MLP 784-300-100-10"),
    "vgg_small": ZooModel(vgg_small, CIFAR_SHAPE, "VGG-style conv3x3+BN+ReLU stages, max pools, Linear classifier"),
    "resnet20": ZooModel(resnet20, CIFAR_SHAPE, "CIFAR ResNet-20, 1x1 conv+BN downsample shortcuts"),
    "mobilenetv2_small": ZooModel(mobilenetv2_small, CIFAR_SHAPE,
                                  "MobileNetV2-style inverted residuals with depthwise convs, ReLU6"),
    "densenet_small": ZooModel(densenet_small, CIFAR_SHAPE, "DenseNet-style concatenating blocks and a transition"),
    "se_net": ZooModel(se_net, CIFAR_SHAPE, "SE-ResNet-style blocks with squeeze-excite channel scaling"),
    "vit_tiny": ZooModel(vit_tiny, CIFAR_SHAPE, "Vision Transformer: conv patches, 2 encoder blocks with MHSA"),
}
"""Every zoo model by name."""


# ----- inputs and self-labelled data ---------------------------------------------------
def gaussian_inputs(count: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``count`` Gaussian inputs of ``shape`` (C, H, W), zero mean and unit variance at every
    pixel; like images, most of the variance (``SMOOTH_SHARE``) is at low spatial frequency:
    a bilinearly upsampled 4x4 field, the rest white noise."""
    channels, height, width = shape
    basis = F.interpolate(torch.eye(16).view(16, 1, 4, 4), size=(height, width), mode="bilinear",
                          align_corners=False)
    coarse = torch.randn(count, channels, 4, 4, generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    smooth = smooth / basis.pow(2).sum(dim=0).sqrt()
    noise = torch.randn(count, *shape, generator=generator)
    return SMOOTH_SHARE**0.5 * smooth + (1 - SMOOTH_SHARE) ** 0.5 * noise


def example_input(name: str, batch: int = 1) -> torch.Tensor:
    """Seeded ``gaussian_inputs`` of shape ``(batch, *input_shape)`` for model ``name``.

    Raises KeyError naming the known models if ``name`` is not one.
    """
    return gaussian_inputs(batch, _entry(name).input_shape, torch.Generator().manual_seed(SEED))


def labelled_data(name: str, sizes: tuple[int, int, int] = SPLIT_SIZES, batch_size: int = BATCH_SIZE,
                  seed: int = SEED) -> Splits:
    """``(train, val, test)`` batches of seeded ``gaussian_inputs`` for model ``name``, each
    labelled with the class the freshly built model gives it.

    Accuracy on these splits is agreement with the uncompressed model: 100% for it.  Like a
    trained model on most of its test set, the model is confident on every input kept: its
    top logit leads the next by at least ``MARGIN``, so no rounding difference (batch size,
    export) changes a label.  No class takes more than ``MAX_CLASS_SHARE`` of a split.  The
    training batches are shuffled with a fixed seed.
    Raises KeyError naming the known models if ``name`` is not one, RuntimeError if the
    model is confident on too few inputs (see ``MAX_DRAWS``).
    """
    entry = _entry(name)
    model = entry.factory()
    splits = []
    for i, size in enumerate(sizes):
        x, y = _confident(model, entry.input_shape, size, torch.Generator().manual_seed(seed + 1 + i))
        splits.append(TensorBatches(x, y, batch_size, shuffle=i == 0, seed=seed))
    return splits[0], splits[1], splits[2]


def _confident(model: nn.Module, shape: tuple[int, ...], count: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` inputs the model labels with at least ``MARGIN`` to spare, and their
    labels; no class takes more than ``MAX_CLASS_SHARE`` of them.

    Raises RuntimeError if ``MAX_DRAWS`` times ``count`` inputs do not give them."""
    quota = math.ceil(MAX_CLASS_SHARE * count)
    xs, ys = [], []
    per_class = [0] * CLASSES
    for _ in range(MAX_DRAWS):
        x = gaussian_inputs(count, shape, generator)
        with torch.no_grad():
            top = model(x).topk(2, dim=1)
        for i in torch.nonzero(top.values[:, 0] - top.values[:, 1] >= MARGIN).flatten().tolist():
            label = int(top.indices[i, 0])
            if per_class[label] < quota and len(ys) < count:
                per_class[label] += 1
                xs.append(x[i])
                ys.append(label)
        if len(ys) == count:
            return torch.stack(xs), torch.tensor(ys)
    raise RuntimeError(f"the model labels too few of {MAX_DRAWS * count} inputs confidently; "
                       f"confident inputs per class: {per_class}")


def _entry(name: str) -> ZooModel:
    if name not in MODELS:
        raise KeyError(f"no zoo model {name!r}; use one of {', '.join(MODELS)}")
    return MODELS[name]


def lenet5_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``lenet5``."""
    return labelled_data("lenet5")


def lenet5_caffe_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``lenet5_caffe``."""
    return labelled_data("lenet5_caffe")


def lenet300_100_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``lenet300_100``."""
    return labelled_data("lenet300_100")


def vgg_small_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``vgg_small``."""
    return labelled_data("vgg_small")


def resnet20_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``resnet20``."""
    return labelled_data("resnet20")


def mobilenetv2_small_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``mobilenetv2_small``."""
    return labelled_data("mobilenetv2_small")


def densenet_small_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``densenet_small``."""
    return labelled_data("densenet_small")


def se_net_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``se_net``."""
    return labelled_data("se_net")


def vit_tiny_data() -> Splits:
    """Self-labelled (train, val, test) Gaussian batches for ``vit_tiny``."""
    return labelled_data("vit_tiny")


PROFILED = ("lenet5", "lenet300_100", "vgg_small", "resnet20", "mobilenetv2_small", "densenet_small")
"""The zoo models ``autocompress profile`` times (their layers and whole), for the learned latency model."""


def instances(names: Sequence[str]) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """``(name, model, example input)`` of each zoo model in ``names`` (random weights, eval mode)."""
    return [(name, globals()[name]().eval(), example_input(name)) for name in names]
