"""DenseNet (Huang et al., 2017): dense blocks joined by transition layers.

A dense block's layer ``l`` sees the concatenation of the block input and every earlier layer's
output, and adds ``g`` (the growth rate) new channels:

    x_l = concat(x_{l-1}, H(x_{l-1})),   H = conv3x3(relu(BN(.)))        (B, C + l*g, H, W)

A transition layer shrinks the model between blocks: ``avgpool2x2(conv1x1(relu(BN(x))))`` halves the
channels and the map. The head is BN, ReLU, global average pooling and a linear layer. The book's
network has four blocks of four layers, growth 32, and a 64-channel stem; its channel count goes
64 -> 192 -> 96 -> 224 -> 112 -> 240 -> 120 -> 248.

Two variants, chosen by ``resolution`` (shapes for one image):

- the book's (``resolution=96``; any side >= 32 works): stem conv 7x7/2, BN, ReLU, max-pool 3x3/2,
  so the blocks run at 24, 12, 6, 3 pixels: ``(1, 96, 96) -> (64, 24, 24) -> ... -> (248, 3, 3) -> (10,)``.
- native 28x28 (``resolution=28``): the stem's convolution is 3x3/1 (a 7x7/2 one would leave 7x7 maps),
  followed by the same max-pool, so the blocks run at 14, 7, 3, 1 pixels with the book's widths:
  ``(1, 28, 28) -> (64, 14, 14) -> ... -> (248, 1, 1) -> (10,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.errors import DivekitError
from divekit.models._classifier import ImageClassifier
from divekit.registry import register_model


@dataclass(frozen=True)
class DenseNetConfig:
    resolution: int = 28  # input side; 28 builds the native variant, 96 (or any side >= 32) the book's stem
    blocks: tuple[int, ...] = (4, 4, 4, 4)  # convolution layers per dense block (the book's)
    growth: int = 32  # channels each layer adds (the book's growth rate)
    stem_channels: int = 64  # channels out of the stem (the book's)
    num_classes: int = 10
    augment: bool = False  # random shifted crops and mirror images during training (task fashion-mnist-aug)
    test_flip: bool = False  # average the logits of each evaluation image and its mirror image
    test_shift: bool = False  # also average over the image moved one pixel each way

    def __post_init__(self) -> None:
        if self.resolution != 28 and self.resolution < 32:
            raise DivekitError(
                f"densenet resolution must be 28 (native) or at least 32 (book stem), got {self.resolution}")
        if not self.blocks or min(self.blocks) < 1 or self.growth < 1 or self.stem_channels < 1:
            raise DivekitError(f"densenet blocks, growth and stem_channels must be positive, got "
                               f"{self.blocks}, {self.growth}, {self.stem_channels}")


def norm_relu_conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """``BN -> ReLU -> conv`` (pre-activation order), ``(B, c_in, H, W) -> (B, c_out, H, W)``."""
    return nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
                         nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2))


class DenseBlock(nn.Module):
    """``(B, C, H, W) -> (B, C + layers * growth, H, W)``: each layer's output joins its input."""

    def __init__(self, c_in: int, layers: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(norm_relu_conv(c_in + k * growth, growth, 3) for k in range(layers))
        self.out_channels = c_in + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)  # concatenate on channels: (B, C + growth, H, W)
        return x


def transition(c_in: int, c_out: int) -> nn.Sequential:
    """``(B, c_in, H, W) -> (B, c_out, H/2, W/2)``: 1x1 convolution, then 2x2 average pooling."""
    return nn.Sequential(norm_relu_conv(c_in, c_out, 1), nn.AvgPool2d(2, stride=2))


class DenseNet(ImageClassifier):
    """DenseNet for ``(batch, 1, R, R)`` images -> logits ``(batch, num_classes)``."""

    name = "densenet"

    def __init__(self, config: DenseNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.stem_channels
        native = config.resolution == 28
        conv = nn.Conv2d(1, c, 3, padding=1) if native else nn.Conv2d(1, c, 7, stride=2, padding=3)
        self.stem = nn.Sequential(conv, nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        body: list[nn.Module] = []
        for i, layers in enumerate(config.blocks):
            block = DenseBlock(c, layers, config.growth)
            body.append(block)
            c = block.out_channels
            if i < len(config.blocks) - 1:
                body.append(transition(c, c // 2))  # halve channels and map between blocks
                c //= 2
        self.body = nn.Sequential(*body)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c, config.num_classes))
        self.out_channels = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, R, R)`` -> last block's maps ``(B, C, h, w)`` (native, book widths: ``(B, 248, 1, 1)``)."""
        return self.body(self.stem(x))


# divekit's recipe: the ResNet recipe (SGD with momentum, one-cycle, weight decay, label smoothing).
@register_model("densenet", config=DenseNetConfig, task="fashion-mnist-aug", chapter="cnn",
                description="DenseNet (dense blocks, transition layers); resolution=96 for the book's stem",
                recipe={"epochs": 8, "lr": 0.2, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4,
                        "schedule": "onecycle", "label_smoothing": 0.1, "channels_last": True})
def build(config: DenseNetConfig) -> nn.Module:
    return DenseNet(config)
