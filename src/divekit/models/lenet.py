"""LeNet-5 (LeCun et al., 1998) as the book presents it, a modern variant, and the book's BN-LeNet.

All three take native Fashion-MNIST images ``(batch, 1, 28, 28)`` and return logits ``(batch, 10)``.

``lenet``, classic (sigmoid, average pooling):

    conv 5x5, 6 ch, pad 2 -> sigmoid -> avgpool 2   (batch, 6, 14, 14)
    conv 5x5, 16 ch       -> sigmoid -> avgpool 2   (batch, 16, 5, 5)
    flatten -> 120 -> sigmoid -> 84 -> sigmoid -> 10

``lenet`` with ``modern=True``: the same layout with ReLU, max pooling and batch normalisation after
each convolution and hidden linear layer, which trains far faster.

``bn-lenet``: the book's batch-normalisation chapter network. It keeps sigmoid and average pooling,
inserts batch norm before every sigmoid, and drops the first convolution's padding:

    conv 5x5, 6 ch -> BN -> sigmoid -> avgpool 2    (batch, 6, 12, 12)
    conv 5x5, 16 ch -> BN -> sigmoid -> avgpool 2   (batch, 16, 4, 4)
    flatten -> 120 -> BN -> sigmoid -> 84 -> BN -> sigmoid -> 10

``scratch=True`` builds either network from the from-scratch blocks of :mod:`divekit.nn` (im2col
convolution, window pooling, batch norm) instead of ``torch.nn``. Parameter and buffer names are the
same, so a state dict moves between the two builds unchanged and both compute the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from divekit.models._classifier import ImageClassifier, xavier_init_
from divekit.nn.batchnorm import BatchNorm1d, BatchNorm2d
from divekit.nn.conv import Conv2d
from divekit.nn.pooling import AvgPool2d, MaxPool2d
from divekit.registry import register_model


class Blocks:
    """Layer constructors from ``torch.nn`` or, with ``scratch``, from :mod:`divekit.nn`."""

    def __init__(self, scratch: bool) -> None:
        self.scratch = scratch

    def conv(self, c_in: int, c_out: int, kernel: int, padding: int = 0) -> nn.Module:
        return (Conv2d if self.scratch else nn.Conv2d)(c_in, c_out, kernel, padding=padding)

    def max_pool(self, kernel: int) -> nn.Module:
        return MaxPool2d(kernel) if self.scratch else nn.MaxPool2d(kernel)

    def avg_pool(self, kernel: int) -> nn.Module:
        return AvgPool2d(kernel) if self.scratch else nn.AvgPool2d(kernel)

    def norm(self, features: int, conv: bool) -> nn.Module:
        if self.scratch:
            return BatchNorm2d(features) if conv else BatchNorm1d(features)
        return nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features)



@dataclass(frozen=True)
class LeNetConfig:
    num_classes: int = 10
    modern: bool = False  # ReLU, max pooling and batch norm instead of sigmoid and average pooling
    scratch: bool = False  # build from divekit.nn's from-scratch layers instead of torch.nn
    xavier_init: bool = False  # the book's Xavier-uniform weights (else torch's defaults): sigmoids start unsaturated


def _book_init(model: nn.Module) -> None:
    # torch's default bound 1/sqrt(fan_in) is about half Xavier's for LeNet's dense layers, and the
    # sigmoid network then sits on a long plateau near chance before it learns.
    xavier_init_(model, zero_bias=False)


class LeNet(ImageClassifier):
    """LeNet for ``(batch, 1, 28, 28)`` images -> logits ``(batch, num_classes)``.

    ``features``: ``(B, 1, 28, 28)`` -> ``(B, 16, 5, 5)``; ``head``: flatten and three dense layers.
    """

    name = "lenet"
    resolution = 28

    def __init__(self, config: LeNetConfig) -> None:
        super().__init__()
        self.config = config
        make = Blocks(config.scratch)
        act = nn.ReLU if config.modern else nn.Sigmoid
        pool = make.max_pool if config.modern else make.avg_pool

        def norm(n: int, conv: bool) -> nn.Module:
            return make.norm(n, conv) if config.modern else nn.Identity()

        self.features = nn.Sequential(
            make.conv(1, 6, 5, padding=2), norm(6, True), act(), pool(2),
            make.conv(6, 16, 5), norm(16, True), act(), pool(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), norm(120, False), act(),
            nn.Linear(120, 84), norm(84, False), act(),
            nn.Linear(84, config.num_classes),
        )
        if config.xavier_init:
            _book_init(self)


@dataclass(frozen=True)
class BNLeNetConfig:
    num_classes: int = 10
    scratch: bool = False  # divekit.nn's from-scratch convolution, pooling and batch norm
    xavier_init: bool = False  # the book's Xavier-uniform weights (else torch's defaults)


class BNLeNet(ImageClassifier):
    """The book's LeNet with batch norm: ``(batch, 1, 28, 28)`` -> logits ``(batch, num_classes)``.

    ``features``: ``(B, 1, 28, 28)`` -> ``(B, 16, 4, 4)``; ``head``: flatten and three dense layers.
    """

    name = "bn-lenet"
    resolution = 28

    def __init__(self, config: BNLeNetConfig) -> None:
        super().__init__()
        self.config = config
        make = Blocks(config.scratch)
        self.features = nn.Sequential(
            make.conv(1, 6, 5), make.norm(6, True), nn.Sigmoid(), make.avg_pool(2),
            make.conv(6, 16, 5), make.norm(16, True), nn.Sigmoid(), make.avg_pool(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120), make.norm(120, False), nn.Sigmoid(),
            nn.Linear(120, 84), make.norm(84, False), nn.Sigmoid(),
            nn.Linear(84, config.num_classes),
        )
        if config.xavier_init:
            _book_init(self)


@register_model("lenet", config=LeNetConfig, task="fashion-mnist", chapter="cnn",
                description="LeNet-5 as in the book (sigmoid, average pooling); modern=True: ReLU, max pool, BN",
                # Measured: from torch's default initialisation the sigmoid network sits at chance
                # (10%) for two epochs of this recipe and reaches 52% in the third.
                recipe={"epochs": 10, "lr": 0.9, "batch_size": 256}, learns_after=3)
def build(config: LeNetConfig) -> nn.Module:
    return LeNet(config)


# The book's recipe for this network: plain SGD, learning rate 0.1, batch 128, 10 epochs.
@register_model("bn-lenet", config=BNLeNetConfig, task="fashion-mnist", chapter="cnn",
                description="the book's LeNet with batch norm before every sigmoid",
                recipe={"epochs": 10, "lr": 0.1, "batch_size": 128})
def build_bn_lenet(config: BNLeNetConfig) -> nn.Module:
    return BNLeNet(config)
