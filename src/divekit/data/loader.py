"""An in-memory minibatch iterator that indexes whole tensors.

A per-sample ``Dataset`` plus ``DataLoader`` calls Python once per example; for datasets that fit in
memory (all of ours) it is far faster to draw a permutation and index the stacked tensors once per
batch. The same loader shards each global batch across processes for distributed data parallel
training, so that ``world_size`` ranks see exactly the batches one process would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from divekit import seeding

Batch = tuple[torch.Tensor, ...]


class TensorLoader:
    """Yield minibatches ``tuple(t[idx] for t in tensors)`` over the first dimension.

    Args:
        tensors: tensors sharing their first dimension ``(n, ...)``.
        batch_size: the *global* batch size; under distributed training each of the
            ``world_size`` ranks receives its contiguous share of every global batch.
        shuffle: draw a fresh permutation each epoch from the run's ``"order"`` stream of
            ``(seed, epoch)`` (:mod:`divekit.seeding`), so a resumed run sees the same batches.
        drop_last: skip the final short batch.
        transform: applied to each batch tuple (e.g. resizing); deterministic.
        augment: ``augment(batch, generator)`` applied before ``transform``, drawing from the
            run's ``"augment"`` stream of ``(seed, epoch, batch number)``.
        rank, world_size: this process's place among the data-parallel processes.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[Batch], Batch] | None = None,
        augment: Callable[[Batch, torch.Generator], Batch] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"tensors disagree on their first dimension: {[t.shape[0] for t in tensors]}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size {world_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.augment = augment
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def num_examples(self) -> int:
        return self.tensors[0].shape[0]

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (used with ``shuffle``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_examples)
        return torch.randperm(self.num_examples, generator=seeding.generator(self.seed, "order", self.epoch))

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` of this epoch, without materialising the skipped ones."""
        order = self._order()
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world_size > 1:
                # Contiguous shard; a short last batch is split as evenly as possible.
                idx = idx.tensor_split(self.world_size)[self.rank]
            batch = tuple(t[idx] for t in self.tensors)
            if self.augment is not None:
                # A stream per (epoch, batch): a resumed run redraws exactly the skipped-to batch's augmentation.
                batch = self.augment(batch, seeding.generator(self.seed, "augment", self.epoch, b))
            yield self.transform(batch) if self.transform else batch
