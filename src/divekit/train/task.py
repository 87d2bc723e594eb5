"""What the Trainer needs to know about a problem: batches, the loss of one batch, and evaluation.

The Trainer owns the optimisation loop; a Task owns the data and the meaning of a batch. Image
classification, character language modelling and translation are Tasks; the loop is the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from divekit.train.distributed import DistInfo


@dataclass
class StepOutput:
    """One training step's loss (a mean over ``count`` items: examples or tokens)."""

    loss: torch.Tensor
    count: int
    correct: float | None = None  # items predicted right, where that means something


class Loader(Protocol):
    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...


class Task(Protocol):
    """The problem a model is trained on.

    ``monitor`` names the validation metric used for model selection, ``monitor_mode`` whether
    larger (``"max"``) or smaller (``"min"``) is better.
    """

    name: str
    monitor: str
    monitor_mode: str

    def train_loader(self, dist: DistInfo) -> Loader: ...

    def start_epoch(self, model: nn.Module, epoch: int) -> None: ...

    def step(self, model: nn.Module, batch: Any) -> StepOutput: ...

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def example_input(self, batch_size: int = 2) -> torch.Tensor: ...


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor or a (nested) tuple/list of tensors to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def batches_from(loader: Iterable, start: int) -> Iterator[Any]:
    """Iterate ``loader`` from batch number ``start`` (to resume mid-epoch)."""
    skip = getattr(loader, "iter_from", None)
    if skip is not None:
        yield from skip(start)
        return
    for i, batch in enumerate(loader):
        if i >= start:
            yield batch
