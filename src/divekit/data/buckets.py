"""Length-bucketed minibatches of padded sentence pairs, trimmed to their longest sentence.

A batch is ``(src (B, S), src_valid_len (B,), tgt (B, T), tgt_valid_len (B,))``. Each epoch's
random permutation is cut into pools of :data:`POOL_BATCHES` batches, each pool is sorted by
length and cut into batches, and the batches are shuffled: pairs of like length share a batch, so
little of it is padding, while the order of batches stays random.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from divekit import seeding

Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # src (B, S), src_valid_len (B,), tgt (B, T), tgt_valid_len (B,)
POOL_BATCHES = 50  # batches per sorting pool: long enough to group lengths, short enough to stay random


def trim(batch: Batch) -> Batch:
    """Cut the padding columns that no row of the batch uses."""
    src, src_len, tgt, tgt_len = batch
    return src[:, : int(src_len.max())], src_len, tgt[:, : int(tgt_len.max())], tgt_len


class BucketLoader:
    """Length-bucketed, trimmed minibatches of ``(src, src_valid_len, tgt, tgt_valid_len)``.

    The batch order is a pure function of ``(seed, epoch)``, so a resumed run sees the same batches.
    Under data parallelism each rank takes its contiguous share of every global batch.
    """

    def __init__(self, arrays: Batch, *, batch_size: int, seed: int = 0, bucket: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        self.arrays, self.batch_size, self.seed, self.bucket = arrays, batch_size, seed, bucket
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.arrays[0].shape[0] // self.batch_size)

    def batch_indices(self) -> list[Tensor]:
        """This epoch's batches as index tensors."""
        g = seeding.generator(self.seed, "order", self.epoch)
        order = torch.randperm(self.arrays[0].shape[0], generator=g)
        if self.bucket:
            length = self.arrays[3] * 1000 + self.arrays[1]  # by target length, then source length
            pool = POOL_BATCHES * self.batch_size
            order = torch.cat([chunk[torch.argsort(length[chunk], stable=True)] for chunk in order.split(pool)])
        batches = list(order.split(self.batch_size))
        if self.bucket:  # sorted pools would otherwise run from short to long sentences
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Batch]:
        for idx in self.batch_indices()[start:]:
            if self.world_size > 1:
                idx = idx.tensor_split(self.world_size)[self.rank]
            yield trim(tuple(t[idx] for t in self.arrays))
