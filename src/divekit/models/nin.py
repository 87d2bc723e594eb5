"""Network in Network (Lin et al., 2013): convolutions followed by per-pixel MLPs, no dense layers.

A NiN block is one spatial convolution followed by two 1x1 convolutions, each with a ReLU:

    nin(x) = relu(conv1x1(relu(conv1x1(relu(conv_kxk(x))))))

The 1x1 convolutions act as a two-layer fully connected network applied at every pixel. The last
block has one output channel per class; global average pooling turns each class map into a logit,
so the network has no fully connected layer at all (the book's network keeps the final ReLU, so the
logits are non-negative, and so does this one).

With ``batch_norm=True`` every convolution is followed by batch normalisation before its ReLU (NiN
predates batch norm; the blocks, pooling and head are unchanged). The book's NiN learns slowly: its
class maps pass through three 10-channel ReLU layers from Xavier weights, and at 28x28 it stays
near 82% validation accuracy after 10 epochs, while batch norm keeps those layers' inputs centred.

    nin(96, 11x11/4) -> maxpool 3x3/2 -> nin(256, 5x5, pad 2) -> maxpool 3x3/2
    -> nin(384, 3x3, pad 1) -> maxpool 3x3/2 -> dropout 0.5 -> nin(10, 3x3, pad 1) -> global avg pool

Two variants, chosen by ``resolution`` (shapes for one image):

- the book's (``resolution=224``; any side >= 67 works): ``(1, 224, 224) -> (96, 54, 54) -> (96, 26, 26)
  -> (256, 12, 12) -> (384, 5, 5) -> (10, 5, 5) -> (10,)``.
- native 28x28 (``resolution=28``): the first block's convolution is 3x3/1 with padding 1 instead of
  11x11/4, and the widths are halved (48, 128, 192): ``(1, 28, 28) -> (48, 13, 13) -> (128, 6, 6)
  -> (192, 2, 2) -> (10, 2, 2) -> (10,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from divekit.errors import DivekitError
from divekit.models._classifier import ImageClassifier, xavier_init_
from divekit.registry import register_model

BOOK_WIDTHS = (96, 256, 384)
NATIVE_WIDTHS = (48, 128, 192)
BOOK_MIN_RESOLUTION = 67  # smallest side the 11x11/4 stem and three 3x3/2 pools leave at least 1 pixel of


@dataclass(frozen=True)
class NiNConfig:
    resolution: int = 28  # input side; 28 builds the native variant, 224 (the book's) or any side >= 67 the book's
    width: float = 1.0  # multiplier on the three blocks' widths (book 96, 256, 384; native 48, 128, 192)
    dropout: float = 0.5  # before the classifying block (the book's)
    batch_norm: bool = False  # batch norm after every convolution (not in the book's NiN)
    num_classes: int = 10
    augment: bool = False  # random shifted crops and mirror images during training (task fashion-mnist-aug)
    test_flip: bool = False  # average the logits of each evaluation image and its mirror image
    test_shift: bool = False  # also average over the image moved one pixel each way

    def __post_init__(self) -> None:
        if self.resolution != 28 and self.resolution < BOOK_MIN_RESOLUTION:
            raise DivekitError(f"nin resolution must be 28 (native) or at least {BOOK_MIN_RESOLUTION}, "
                               f"got {self.resolution}")
        if self.width <= 0 or not 0 <= self.dropout < 1:
            raise DivekitError(f"nin width must be positive and dropout in [0, 1), got {self.width}, {self.dropout}")


def nin_block(c_in: int, c_out: int, kernel: int, stride: int, padding: int,
              batch_norm: bool = False) -> nn.Sequential:
    """``(B, c_in, H, W) -> (B, c_out, H', W')``: a ``kernel`` convolution, then two 1x1 ones."""
    convs = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding),
             nn.Conv2d(c_out, c_out, 1), nn.Conv2d(c_out, c_out, 1)]  # the 1x1s: a per-pixel dense layer
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class NiN(ImageClassifier):
    """NiN for ``(batch, 1, R, R)`` images -> logits ``(batch, num_classes)``."""

    name = "nin"

    def __init__(self, config: NiNConfig) -> None:
        super().__init__()
        self.config = config
        native = config.resolution == 28
        w1, w2, w3 = (max(1, round(w * config.width)) for w in (NATIVE_WIDTHS if native else BOOK_WIDTHS))
        bn = config.batch_norm
        first = nin_block(1, w1, 3, 1, 1, bn) if native else nin_block(1, w1, 11, 4, 0, bn)
        self.features = nn.Sequential(
            first, nn.MaxPool2d(3, stride=2),
            nin_block(w1, w2, 5, 1, 2, bn), nn.MaxPool2d(3, stride=2),
            nin_block(w2, w3, 3, 1, 1, bn), nn.MaxPool2d(3, stride=2),
        )
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nin_block(w3, config.num_classes, 3, 1, 1, bn),  # one map per class
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, num_classes)
        )
        xavier_init_(self)  # the book's initialisation for its CNNs
        # forward_features: ``(B, 1, R, R)`` -> ``(B, C_3, h, w)`` (native: ``(B, 192, 2, 2)``).
        # forward_head: ``(B, C_3, h, w)`` -> class maps averaged to logits ``(B, num_classes)``.


# divekit's recipe: AdamW with a one-cycle schedule. Without batch norm, SGD leaves this network's
# initial plateau slowly; Adam's per-weight step sizes get it learning within a few hundred steps.
@register_model("nin", config=NiNConfig, task="fashion-mnist-aug", chapter="cnn",
                description="Network in Network (1x1 convolutions, global average pooling); resolution=224 for the book's",
                recipe={"epochs": 10, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "batch_size": 128,
                        "schedule": "onecycle", "channels_last": True})
def build(config: NiNConfig) -> nn.Module:
    return NiN(config)
