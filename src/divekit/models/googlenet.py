"""GoogLeNet (Szegedy et al., 2015): a stem, nine Inception blocks and global average pooling.

An Inception block runs four branches on the same input and concatenates their channels:

    p1 = relu(conv1x1(x))                                  c1 channels
    p2 = relu(conv3x3(relu(conv1x1(x))))                   c2 = (reduce, out)
    p3 = relu(conv5x5(relu(conv1x1(x))))                   c3 = (reduce, out)
    p4 = relu(conv1x1(maxpool3x3/1(x)))                    c4 channels
    y  = concat(p1, p2, p3, p4)                            (B, c1 + c2[1] + c3[1] + c4, H, W)

The 1x1 "reduce" convolutions shrink the channels before the expensive 3x3 and 5x5 ones. The
network (the book's, with the paper's channel counts; no batch norm, no auxiliary classifiers):

    b1  conv 7x7/2, 64 -> max-pool 3x3/2
    b2  conv 1x1, 64 -> conv 3x3, 192 -> max-pool 3x3/2
    b3  Inception(64, (96, 128), (16, 32), 32), Inception(128, (128, 192), (32, 96), 64) -> max-pool
    b4  five Inception blocks (512, 512, 512, 528, 832 channels out) -> max-pool
    b5  Inception to 832, Inception to 1024 -> global average pool -> linear 10

Two variants, chosen by ``resolution`` (shapes for one image):

- the book's: the book trains on Fashion-MNIST resized to 96 (its text explains that 224 would be
  too slow), where b1..b5 produce 24, 12, 6, 3, 3 pixels: ``(1, 96, 96) -> (192, 12, 12) -> (480, 6, 6)
  -> (832, 3, 3) -> (1024, 3, 3) -> (10,)``; 224 gives the paper's 7x7 final map. Any side >= 32 works.
- native 28x28 (``resolution=28``): b1's convolution is 3x3/1, so the maps are 14, 7, 4, 2, 2 pixels,
  and every channel count is halved (``width=1`` means these halved counts), which keeps the
  branch proportions: ``(1, 28, 28) -> (96, 7, 7) -> (240, 4, 4) -> (416, 2, 2) -> (512, 2, 2) -> (10,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.errors import DivekitError
from divekit.models._classifier import ImageClassifier, xavier_init_
from divekit.registry import register_model

# (c1, (c2 reduce, c2 out), (c3 reduce, c3 out), c4) for the nine blocks, in order (the paper's).
INCEPTION_CHANNELS = (
    (64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64),  # b3
    (192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64), (128, (128, 256), (24, 64), 64),
    (112, (144, 288), (32, 64), 64), (256, (160, 320), (32, 128), 128),  # b4
    (256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128),  # b5
)
NATIVE_SCALE = 0.5  # the native variant's channel counts relative to the paper's


@dataclass(frozen=True)
class GoogLeNetConfig:
    resolution: int = 28  # input side; 28 builds the native variant, 96 (the book's) or any side >= 32 the book's
    width: float = 1.0  # multiplier on every channel count (native counts are already half the paper's)
    num_classes: int = 10
    augment: bool = False  # random shifted crops and mirror images during training (task fashion-mnist-aug)
    test_flip: bool = False  # average the logits of each evaluation image and its mirror image
    test_shift: bool = False  # also average over the image moved one pixel each way

    def __post_init__(self) -> None:
        if self.resolution != 28 and self.resolution < 32:
            raise DivekitError(f"googlenet resolution must be 28 (native) or at least 32, got {self.resolution}")
        if self.width <= 0:
            raise DivekitError(f"googlenet width must be positive, got {self.width}")


class Inception(nn.Module):
    """Four parallel branches, concatenated: ``(B, C, H, W) -> (B, c1 + c2[1] + c3[1] + c4, H, W)``."""

    def __init__(self, c_in: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> None:
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731 - a fresh module per use
        self.p1 = nn.Sequential(nn.Conv2d(c_in, c1, 1), relu())
        self.p2 = nn.Sequential(nn.Conv2d(c_in, c2[0], 1), relu(), nn.Conv2d(c2[0], c2[1], 3, padding=1), relu())
        self.p3 = nn.Sequential(nn.Conv2d(c_in, c3[0], 1), relu(), nn.Conv2d(c3[0], c3[1], 5, padding=2), relu())
        self.p4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(c_in, c4, 1), relu())
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], dim=1)  # (B, C_out, H, W)


class GoogLeNet(ImageClassifier):
    """GoogLeNet for ``(batch, 1, R, R)`` images -> logits ``(batch, num_classes)``."""

    name = "googlenet"

    def __init__(self, config: GoogLeNetConfig) -> None:
        super().__init__()
        self.config = config
        scale = config.width * (NATIVE_SCALE if config.resolution == 28 else 1.0)

        def ch(n: int) -> int:
            return max(1, round(n * scale))

        pool = lambda: nn.MaxPool2d(3, stride=2, padding=1)  # noqa: E731 - halves the map (rounding up)
        first = (nn.Conv2d(1, ch(64), 3, padding=1) if config.resolution == 28
                 else nn.Conv2d(1, ch(64), 7, stride=2, padding=3))
        b1 = nn.Sequential(first, nn.ReLU(inplace=True), pool())
        b2 = nn.Sequential(nn.Conv2d(ch(64), ch(64), 1), nn.ReLU(inplace=True),
                           nn.Conv2d(ch(64), ch(192), 3, padding=1), nn.ReLU(inplace=True), pool())
        blocks, c = [], ch(192)
        for c1, (r2, o2), (r3, o3), c4 in INCEPTION_CHANNELS:
            block = Inception(c, ch(c1), (ch(r2), ch(o2)), (ch(r3), ch(o3)), ch(c4))
            blocks.append(block)
            c = block.out_channels
        b3 = nn.Sequential(*blocks[:2], pool())
        b4 = nn.Sequential(*blocks[2:7], pool())
        b5 = nn.Sequential(*blocks[7:])
        self.features = nn.Sequential(b1, b2, b3, b4, b5)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, config.num_classes))
        xavier_init_(self)  # the book's initialisation for its CNNs
        # forward_features: ``(B, 1, R, R)`` -> b5's maps ``(B, 1024 * scale, h, w)`` (native: ``(B, 512, 2, 2)``).
        # forward_head: ``(B, C, h, w)`` -> logits ``(B, num_classes)``.


# divekit's recipe: AdamW with a one-cycle schedule. Without batch norm, SGD leaves this network's
# initial plateau slowly; Adam's per-weight step sizes get it learning within a few hundred steps.
@register_model("googlenet", config=GoogLeNetConfig, task="fashion-mnist-aug", chapter="cnn",
                description="GoogLeNet (Inception blocks); resolution=96 for the book's network",
                recipe={"epochs": 10, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "batch_size": 128,
                        "schedule": "onecycle", "channels_last": True})
def build(config: GoogLeNetConfig) -> nn.Module:
    return GoogLeNet(config)
