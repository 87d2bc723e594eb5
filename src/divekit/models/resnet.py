"""ResNet (He et al., 2016): stages of residual blocks; ResNet-18 by default.

Residual block, with stride ``s`` (1, or 2 at the start of a stage) and BN = batch norm:

    f(x) = BN(conv3x3(relu(BN(conv3x3_s(x)))))
    y    = relu(f(x) + shortcut(x)),   shortcut(x) = x                 (same shape: identity)
                                       shortcut(x) = conv1x1_s(x)      (projection: new width or stride)

so each block only has to learn the residual ``f(x) = y - x`` and an identity mapping is free. The
network is a stem, four stages whose first block halves the map (except in stage 1) and doubles the
width, global average pooling and one linear layer. With ``blocks=(2, 2, 2, 2)`` there are 16
convolutions in the blocks, plus the stem and the classifier: 18 layers.

Two variants, chosen by ``resolution`` (shapes for one image):

- the book's (``resolution=96``, Fashion-MNIST resized; any side >= 32 works): stem conv 7x7/2, 64
  channels, BN, ReLU, max-pool 3x3/2, so stages run at 24, 12, 6, 3 pixels with 64, 128, 256, 512
  channels: ``(1, 96, 96) -> (64, 24, 24) -> ... -> (512, 3, 3) -> (10,)``.
- native 28x28 (``resolution=28``): a 7x7/2 stem would leave 7x7 maps for stage 1, so the stem is a
  3x3/1 convolution before the same max-pool, and stages run at 14, 7, 4, 2 pixels. The widths are
  halved (32, 64, 128, 256) so the network costs about a tenth of the book's per image while keeping
  its depth, blocks and shape schedule: ``(1, 28, 28) -> (32, 14, 14) -> ... -> (256, 2, 2) -> (10,)``.

Convolutions followed by batch norm carry no bias (the norm's shift makes it redundant); the
projection shortcut is a plain 1x1 convolution, as in the book.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from divekit.errors import DivekitError
from divekit.models._classifier import ImageClassifier
from divekit.registry import register_model

BOOK_RESOLUTION = 96
BOOK_WIDTHS = (64, 128, 256, 512)
NATIVE_WIDTHS = (32, 64, 128, 256)


@dataclass(frozen=True)
class ResNetConfig:
    resolution: int = 28  # input side; 28 builds the native variant, 96 (or any side >= 32) the book's stem
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # residual blocks per stage; (2, 2, 2, 2) is ResNet-18
    width: float = 1.0  # multiplier on the stage widths (book 64..512, native 32..256)
    num_classes: int = 10
    zero_init_residual: bool = False  # start each block's last BN scale at 0, so blocks begin as identities
    augment: bool = False  # random shifted crops and mirror images during training (task fashion-mnist-aug)
    test_flip: bool = False  # average the logits of each evaluation image and its mirror image
    test_shift: bool = False  # also average over the image moved one pixel each way
    erase: float = 0.0  # probability of random erasing per training image (task fashion-mnist-aug)

    def __post_init__(self) -> None:
        if self.resolution != 28 and self.resolution < 32:
            raise DivekitError(
                f"resnet resolution must be 28 (native) or at least 32 (book stem), got {self.resolution}")
        if not self.blocks or min(self.blocks) < 1:
            raise DivekitError(f"resnet blocks must be positive counts per stage, got {self.blocks}")
        if self.width <= 0:
            raise DivekitError(f"resnet width must be positive, got {self.width}")

    @property
    def native(self) -> bool:
        return self.resolution == 28

    def stage_widths(self) -> list[int]:
        base = NATIVE_WIDTHS if self.native else BOOK_WIDTHS
        # Stages beyond four keep doubling, as the book's recipe for deeper variants does.
        widths = [base[min(i, 3)] * 2 ** max(0, i - 3) for i in range(len(self.blocks))]
        return [max(1, round(w * self.width)) for w in widths]


class Residual(nn.Module):
    """Residual block ``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``: ``relu(f(x) + shortcut(x))``.

    ``use_1x1conv`` adds the projection shortcut; it is required when the width or the map size
    changes, and optional (for comparison) when they do not.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, use_1x1conv: bool = False) -> None:
        super().__init__()
        if (stride != 1 or c_in != c_out) and not use_1x1conv:
            raise ValueError(f"a block from {c_in} to {c_out} channels with stride {stride} needs use_1x1conv=True")
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride) if use_1x1conv else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.relu(self.bn1(self.conv1(x)))
        f = self.bn2(self.conv2(f))  # the residual f(x)
        return self.relu(f + self.shortcut(x))


def stem(native: bool, width: int) -> nn.Sequential:
    """``(B, 1, R, R) -> (B, width, R/4, R/4)`` (book) or ``(B, width, 14, 14)`` (native, R = 28)."""
    conv = (nn.Conv2d(1, width, 3, padding=1, bias=False) if native
            else nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))


class ResNet(ImageClassifier):
    """ResNet for ``(batch, 1, R, R)`` images -> logits ``(batch, num_classes)``."""

    name = "resnet"

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.stage_widths()
        self.stem = stem(config.native, widths[0])
        stages, c_in = [], widths[0]
        for i, (n, c_out) in enumerate(zip(config.blocks, widths)):
            stride = 1 if i == 0 else 2  # the stem's max-pool already halved the map before stage 1
            blocks = [Residual(c_in, c_out, stride, use_1x1conv=stride != 1 or c_in != c_out)]
            blocks += [Residual(c_out, c_out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, config.num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He initialisation: keeps the activation variance through ReLU layers.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, Residual):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, R, R)`` -> last stage's maps ``(B, C_4, R/32, R/32)`` (native: ``(B, 256w, 2, 2)``)."""
        return self.stages(self.stem(x))


# divekit's recipe for the native variant: SGD with momentum, a one-cycle schedule, weight decay and
# label smoothing, channels-last layout (faster convolutions on the CPU). With `-o augment=true -o
# test_flip=true` and `--precision bf16` it is the recipe for the 10-minute target (docs/results/cnn.md).
@register_model("resnet", config=ResNetConfig, task="fashion-mnist-aug", chapter="cnn",
                description="ResNet-18 (residual blocks, 1x1 projections); resolution=96 for the book's stem",
                recipe={"epochs": 12, "lr": 0.2, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4,
                        "schedule": "onecycle", "label_smoothing": 0.1, "channels_last": True})
def build(config: ResNetConfig) -> nn.Module:
    return ResNet(config)
