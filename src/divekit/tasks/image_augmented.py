"""Fashion-MNIST classification with optional training augmentation and test-time view averaging.

The same data, split, loss and metrics as ``fashion-mnist`` (:mod:`divekit.tasks.image_classification`);
the model config may switch on these:

- ``augment``: each training image is zero-padded by ``CROP_PADDING`` pixels on every side, a random
  28x28 window of it is kept, and the window is mirrored left-right with probability 1/2. Both happen
  on the uint8 ``(batch, 28, 28)`` images in one gather, before resizing and standardising, so the
  augmentation costs almost nothing next to a training step.
- ``erase`` (a probability): after the crop and mirror, random erasing (Zhong et al., 2017) replaces
  a random rectangle of each chosen image, 2-40% of its area with aspect ratio 0.3-3.3, by uniform
  noise, so the network cannot lean on any one region of the garment.
- ``test_flip``: evaluation averages the logits of each image and of its mirror image.
- ``test_shift``: evaluation also averages over the image moved one pixel up, down, left and right
  (each mirrored too with ``test_flip``: ten views). Training crops move the garment by up to
  ``CROP_PADDING`` pixels, so these are views the network has learned to read.

Clothing is (nearly) left-right symmetric, so mirrored images are still images of their class. The
random draws come from the run's ``"augment"`` stream of (seed, epoch, batch) (:mod:`divekit.seeding`),
independent of dropout and of the data order, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from divekit.data.loader import TensorLoader
from divekit.errors import ShapeError
from divekit.tasks import register_task
from divekit.tasks.image_classification import ImageClassification, prepare_images
from divekit.train.config import TrainConfig
from divekit.train.distributed import DistInfo

# Up to 2 pixels of shift each way: 7% of the image side, enough to regularise without cutting
# off the garment (the objects fill most of the 28x28 frame).
CROP_PADDING = 2


def random_crop_flip(images: torch.Tensor, padding: int = CROP_PADDING, *, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``(H, W)`` windows of the zero-padded images, each mirrored with probability 1/2.

    ``images``: ``(B, H, W)`` of any dtype -> same shape and dtype. Window offsets are uniform on
    ``0 .. 2 * padding`` in each direction, drawn independently per image.
    """
    if images.dim() != 3:
        raise ShapeError(f"random_crop_flip expects images of shape (batch, H, W), got {tuple(images.shape)}")
    b, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = dy[:, None] + torch.arange(h)  # (B, H): source row of each output row
    cols = dx[:, None] + torch.arange(w)  # (B, W): source column of each output column
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)  # reading columns backwards mirrors
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def shift_images(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``(B, H, W)`` images moved ``dy`` rows down and ``dx`` columns right; vacated pixels are zero.

    ``|dy|`` and ``|dx|`` must be below the image side; the output keeps the input's shape and dtype.
    """
    h, w = images.shape[-2:]
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return images
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded[:, pad - dy:pad - dy + h, pad - dx:pad - dx + w]


TEST_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (dy, dx): the image and its four 1-pixel moves


def evaluation_views(images: torch.Tensor, *, flip: bool, shift: bool) -> list[torch.Tensor]:
    """The views of uint8 ``(B, H, W)`` images whose logits evaluation averages.

    The images themselves, with ``shift`` their four one-pixel moves, and with ``flip`` the mirror
    image of each of those: 1, 2, 5 or 10 views, each ``(B, H, W)``.
    """
    if images.dim() != 3:
        raise ShapeError(f"evaluation_views expects images of shape (batch, H, W), got {tuple(images.shape)}")
    moved = [shift_images(images, dy, dx) for dy, dx in (TEST_SHIFTS if shift else TEST_SHIFTS[:1])]
    return moved + [v.flip(-1) for v in moved] if flip else moved


def random_erase(images: torch.Tensor, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.3, 3.3), generator: torch.Generator | None = None) -> torch.Tensor:
    """Each uint8 image of ``(B, H, W)`` with probability ``p`` gets one rectangle of uniform noise.

    The rectangle's area fraction is uniform on ``area``, its aspect ratio (height / width) log-uniform
    on ``ratio``; sides are clipped to the image and the corner is uniform over the positions that fit.
    """
    if images.dim() != 3:
        raise ShapeError(f"random_erase expects images of shape (batch, H, W), got {tuple(images.shape)}")
    b, h, w = images.shape
    u = torch.rand(b, 5, generator=generator)
    frac = area[0] + (area[1] - area[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    eh = (torch.sqrt(frac * aspect) * h).round().clamp(1, h).long()  # (B,) rectangle heights
    ew = (torch.sqrt(frac / aspect) * w).round().clamp(1, w).long()
    top = (u[:, 2] * (h - eh + 1)).long()  # uniform over 0 .. h - eh
    left = (u[:, 3] * (w - ew + 1)).long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = (((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :])  # (B, H, W)
    inside &= (u[:, 4] < p)[:, None, None]
    noise = torch.randint(0, 256, images.shape, generator=generator).to(images.dtype)
    return torch.where(inside, noise, images)


class AugmentedImageClassification(ImageClassification):
    """:class:`ImageClassification` with training augmentation and/or test-time view averaging."""

    name = "fashion-mnist-aug"

    def __init__(self, *, augment: bool = False, test_flip: bool = False, test_shift: bool = False,
                 erase: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= erase <= 1.0:
            raise ValueError(f"erase is a probability, got {erase}")
        self.augment = augment
        self.test_flip = test_flip
        self.test_shift = test_shift
        self.erase = erase

    def _augment(self, batch, generator: torch.Generator):
        x, y = batch
        if self.augment:
            x = random_crop_flip(x, generator=generator)
        if self.erase:
            x = random_erase(x, self.erase, generator=generator)
        return x, y

    def train_loader(self, dist: DistInfo) -> TensorLoader:
        x, y = self.splits["train"]
        return TensorLoader(
            x, y, batch_size=self.batch_size, shuffle=True, seed=self.seed, augment=self._augment,
            transform=self._transform,
            rank=dist.rank, world_size=dist.world_size,
        )

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(n, classes)`` averaged over the views of :func:`evaluation_views`, and labels ``(n,)``.

        With neither ``test_flip`` nor ``test_shift`` the one view is the image itself: plain logits.
        """
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        images, labels = self.splits[split]
        logits = []
        for start in range(0, len(images), self.eval_batch_size):
            chunk = images[start:start + self.eval_batch_size]
            views = evaluation_views(chunk, flip=self.test_flip, shift=self.test_shift)
            # The views are built from the uint8 images, so a shift fills with black as training crops do.
            per_view = [model(prepare_images(v, self.resolution).to(device)).float() for v in views]
            logits.append(torch.stack(per_view).mean(0).cpu())
        model.train(was_training)
        return torch.cat(logits), labels

    def state(self) -> dict[str, Any]:
        return {**super().state(), "augment": self.augment, "test_flip": self.test_flip,
                "test_shift": self.test_shift, "erase": self.erase}


@register_task("fashion-mnist-aug")
def make(model_config: Any, train_config: TrainConfig, *, limit: int | None = None) -> AugmentedImageClassification:
    return AugmentedImageClassification(
        augment=getattr(model_config, "augment", False),
        test_flip=getattr(model_config, "test_flip", False),
        test_shift=getattr(model_config, "test_shift", False),
        erase=getattr(model_config, "erase", 0.0),
        batch_size=train_config.batch_size,
        seed=train_config.seed,
        resolution=getattr(model_config, "resolution", 28),
        limit=limit,
        label_smoothing=train_config.label_smoothing,
    )
