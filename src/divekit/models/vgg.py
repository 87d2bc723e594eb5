"""VGG (Simonyan and Zisserman, 2014): repeated blocks of 3x3 convolutions, each block ending in a pool.

A VGG block is ``n`` times (3x3 convolution with padding 1, ReLU), then 2x2 max-pooling with stride 2:
the convolutions keep the map size and the pool halves it. The network is a sequence of blocks
(``convs[i]`` convolutions of ``channels[i]`` channels in block ``i``) and the book's three dense
layers: flatten -> 4096 -> ReLU -> dropout -> 4096 -> ReLU -> dropout -> classes.

VGG-11 has blocks of 1, 1, 2, 2, 2 convolutions with 64, 128, 256, 512, 512 channels. The book trains
it on Fashion-MNIST with a quarter of those channels (16, 32, 64, 128, 128) to keep training
affordable; that is the default here (``channels`` changes it, ``convs`` the block layout).

Resolution: a block halves the map only while the map is at least 6 pixels wide, so the network
never pools a map below 3x3. At the book's 224 pixels all five blocks pool, exactly as in VGG-11:
``(1, 224, 224) -> (16, 112, 112) -> (32, 56, 56) -> (64, 28, 28) -> (128, 14, 14) -> (128, 7, 7) ->
6272 -> 4096 -> 4096 -> 10``. At native 28x28 (``resolution=28``) the first three blocks pool and
the last two work on 3x3 maps, and the dense layers, which see 1152 features instead of 6272, are a
quarter as wide: ``(1, 28, 28) -> (16, 14, 14) -> (32, 7, 7) -> (64, 3, 3) -> (128, 3, 3) ->
(128, 3, 3) -> 1152 -> 1024 -> 1024 -> 10``. (At 4096 units the dense layers would hold 97% of the
native network's weights, and updating them would cost more time than all the convolutions.)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from divekit.errors import DivekitError
from divekit.models._classifier import ImageClassifier, xavier_init_
from divekit.registry import register_model

SMALLEST_POOLED = 6  # a map is halved only while it is at least this wide (so never below 3x3)
NATIVE_HIDDEN_SCALE = 0.25  # the native variant's dense widths relative to ``hidden``


@dataclass(frozen=True)
class VGGConfig:
    resolution: int = 28  # input side; the book trains at 224, 28 is the native size
    convs: tuple[int, ...] = (1, 1, 2, 2, 2)  # 3x3 convolutions per block (VGG-11's layout)
    channels: tuple[int, ...] = (16, 32, 64, 128, 128)  # channels per block (VGG-11's / 4, as the book trains)
    hidden: int = 4096  # width of the two hidden dense layers (the book's); the native variant uses a quarter
    dropout: float = 0.5  # after each hidden dense layer (the book's)
    num_classes: int = 10
    augment: bool = False  # random shifted crops and mirror images during training (task fashion-mnist-aug)
    test_flip: bool = False  # average the logits of each evaluation image and its mirror image
    test_shift: bool = False  # also average over the image moved one pixel each way

    def __post_init__(self) -> None:
        if len(self.convs) != len(self.channels) or not self.convs:
            raise DivekitError(f"vgg convs and channels need one entry per block, got {self.convs} and {self.channels}")
        if min(self.convs) < 1 or min(self.channels) < 1 or self.hidden < 1:
            raise DivekitError("vgg convs, channels and hidden must be positive")
        if self.resolution < 3:
            raise DivekitError(f"vgg resolution must be at least 3, got {self.resolution}")
        if not 0 <= self.dropout < 1:
            raise DivekitError(f"vgg dropout must be in [0, 1), got {self.dropout}")


def vgg_block(c_in: int, c_out: int, convs: int, pool: bool) -> nn.Sequential:
    """``(B, c_in, H, W) -> (B, c_out, H/2, W/2)`` (or ``H, W`` without ``pool``)."""
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2, stride=2))
    return nn.Sequential(*layers)


class VGG(ImageClassifier):
    """VGG for ``(batch, 1, R, R)`` images -> logits ``(batch, num_classes)``."""

    name = "vgg"

    def __init__(self, config: VGGConfig) -> None:
        super().__init__()
        self.config = config
        blocks, c, side = [], 1, config.resolution
        for n, width in zip(config.convs, config.channels):
            pool = side >= SMALLEST_POOLED
            blocks.append(vgg_block(c, width, n, pool))
            c, side = width, side // 2 if pool else side
        self.features = nn.Sequential(*blocks)
        hidden = max(1, round(config.hidden * (NATIVE_HIDDEN_SCALE if config.resolution == 28 else 1.0)))
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731 - a fresh module per use
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * side * side, hidden), relu(), nn.Dropout(config.dropout),
            nn.Linear(hidden, hidden), relu(), nn.Dropout(config.dropout),
            nn.Linear(hidden, config.num_classes),
        )
        xavier_init_(self)  # the book's initialisation for its CNNs
        # forward_features: ``(B, 1, R, R)`` -> ``(B, C_last, s, s)`` (native ``(B, 128, 3, 3)``, book ``(B, 128, 7, 7)``).
        # forward_head: ``(B, C_last, s, s)`` -> logits ``(B, num_classes)``.


# divekit's recipe: AdamW with a one-cycle schedule. Without batch norm, SGD leaves this network's
# initial plateau slowly; Adam's per-weight step sizes get it learning within a few hundred steps.
@register_model("vgg", config=VGGConfig, task="fashion-mnist-aug", chapter="cnn",
                description="VGG-11 blocks at the book's quarter width; resolution=224 for the book's input",
                recipe={"epochs": 10, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "batch_size": 128,
                        "schedule": "onecycle", "channels_last": True})
def build(config: VGGConfig) -> nn.Module:
    return VGG(config)
