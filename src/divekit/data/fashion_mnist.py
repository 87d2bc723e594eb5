"""Fashion-MNIST: 70,000 28x28 grey images of clothing in 10 classes, from the verified store.

Shapes: raw images are uint8 ``(N, 28, 28)``, labels int64 ``(N,)`` in ``0..9``; model inputs are
float32 ``(N, 1, H, W)`` in ``[0, 1]`` (``H = W = 28`` unless resized). Everything is batch-first.

The validation set is carved from the training file only (a seeded permutation puts ``val_size``
images aside), so the 10,000 test images are never seen during model selection.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from divekit import seeding
from divekit.data.idx import parse_idx
from divekit.data.loader import Batch, TensorLoader
from divekit.data.store import get_file, load_bytes
from divekit.errors import DataError, ShapeError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
IMAGE_SIZE = 28

# Per-pixel mean and standard deviation of the 60,000 training images scaled to [0, 1]
# (population std over all 47,040,000 pixels; the sample std agrees to 7 digits).
TRAIN_MEAN = 0.2860406
TRAIN_STD = 0.3530242

# Images interpolated per chunk by to_float: bounds the float temporaries to about
# chunk * H * W * 4 bytes (200 MB at 224 x 224) whatever the dataset size.
RESIZE_CHUNK = 1024

Split = Literal["train", "test"]
Pair = tuple[torch.Tensor, torch.Tensor]


def load_fashion_mnist(split: Split, *, download: bool = True) -> Pair:
    """Verified images uint8 ``(n, 28, 28)`` and labels int64 ``(n,)`` of ``split``.

    ``n`` is 60,000 for ``"train"`` and 10,000 for ``"test"``.
    """
    if split not in SPLIT_SIZES:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; expected 'train' or 'test'")
    images_key, labels_key = f"fashion-mnist/{split}-images", f"fashion-mnist/{split}-labels"
    images = parse_idx(load_bytes(images_key, download=download), name=get_file(images_key).relpath)
    labels = parse_idx(load_bytes(labels_key, download=download), name=get_file(labels_key).relpath)
    n = SPLIT_SIZES[split]
    if images.shape != (n, IMAGE_SIZE, IMAGE_SIZE) or labels.shape != (n,):
        raise DataError(
            f"Fashion-MNIST {split}: expected images ({n}, 28, 28) and labels ({n},), "
            f"found {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return images, labels.long()


def to_float(images: torch.Tensor, *, resize: int | None = None, chunk: int = RESIZE_CHUNK) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, 1, H, W)`` to float32 ``(N, 1, R, R)`` in ``[0, 1]``.

    ``R`` is ``resize`` (bilinear, corners not aligned, so values stay convex combinations of
    pixels and remain in ``[0, 1]``) or the input size when ``resize`` is ``None``.
    """
    if images.dtype != torch.uint8:
        raise ShapeError(f"to_float expects uint8 images, got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, 1, H, W)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ShapeError(f"to_float expects images (N, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    if resize is None or (resize, resize) == tuple(images.shape[2:]):
        return images.float().div_(255.0)
    if resize <= 0:
        raise ShapeError(f"resize must be a positive side length, got {resize}")
    out = torch.empty(images.shape[0], 1, resize, resize)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float().div_(255.0)
        out[start : start + chunk] = F.interpolate(
            block, size=(resize, resize), mode="bilinear", align_corners=False
        )
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - TRAIN_MEAN) / TRAIN_STD`` for float images in ``[0, 1]``, any shape."""
    return (x - TRAIN_MEAN) / TRAIN_STD


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`normalize`: ``x * TRAIN_STD + TRAIN_MEAN``."""
    return x * TRAIN_STD + TRAIN_MEAN


def _float_batch(batch: Batch, resize: int | None) -> Batch:
    images, labels = batch
    return to_float(images, resize=resize), labels


class Splits(NamedTuple):
    """``(images uint8 (n, 28, 28), labels int64 (n,))`` for each of train, val and test."""

    train: Pair
    val: Pair
    test: Pair


class Loaders(NamedTuple):
    """Minibatch iterators yielding ``(images float32 (B, 1, R, R), labels int64 (B,))``."""

    train: TensorLoader
    val: TensorLoader
    test: TensorLoader


class FashionMNIST:
    """Fashion-MNIST split into train / validation / test and served as minibatches.

    Args:
        train, test: ``(images, labels)`` pairs to use instead of the verified files (e.g. tiny
            synthetic data in tests); each missing one is loaded on first use.
        download: allow fetching the files when no local copy exists.
    """

    def __init__(self, train: Pair | None = None, test: Pair | None = None, *, download: bool = True) -> None:
        self._train = train
        self._test = test
        self.download = download

    def _pair(self, split: Split) -> Pair:
        if split == "train":
            if self._train is None:
                self._train = load_fashion_mnist("train", download=self.download)
            return self._train
        if self._test is None:
            self._test = load_fashion_mnist("test", download=self.download)
        return self._test

    def train_val_test(self, val_size: int = 5_000, seed: int = 0) -> Splits:
        """Hold out ``val_size`` training images chosen by the ``"data"`` stream of run ``seed``.

        The same ``(val_size, seed)`` always gives the same split; the training part keeps the
        permuted order, so its first ``k`` images are a random (but fixed) subset.
        """
        images, labels = self._pair("train")
        if not 0 <= val_size < images.shape[0]:
            raise DataError(f"val_size must be in [0, {images.shape[0]}), got {val_size}")
        order = torch.randperm(images.shape[0], generator=seeding.generator(seed, "data"))
        val_idx, train_idx = order[:val_size], order[val_size:]
        return Splits(
            train=(images[train_idx], labels[train_idx]),
            val=(images[val_idx], labels[val_idx]),
            test=self._pair("test"),
        )

    def loaders(
        self,
        batch_size: int,
        *,
        resize: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        limit: int | None = None,
        val_size: int = 5_000,
    ) -> Loaders:
        """Train (shuffled each epoch), validation and test loaders.

        Images stay uint8 in memory and are converted (and resized) per batch, so a 224-pixel
        resize never materialises the whole set in float. ``limit`` keeps the first ``limit``
        images of the permuted training part; ``seed`` drives both the split and the shuffling.
        """
        splits = self.train_val_test(val_size=val_size, seed=seed)
        train_x, train_y = splits.train
        if limit is not None:
            if limit <= 0:
                raise DataError(f"limit must be positive, got {limit}")
            train_x, train_y = train_x[:limit], train_y[:limit]
        common = dict(batch_size=batch_size, transform=partial(_float_batch, resize=resize), rank=rank,
                      world_size=world_size)
        return Loaders(
            train=TensorLoader(train_x, train_y, shuffle=True, seed=seed, **common),
            val=TensorLoader(*splits.val, **common),
            test=TensorLoader(*splits.test, **common),
        )
