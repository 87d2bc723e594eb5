"""One run seed, one independent random stream per purpose.

A run has one seed (``--seed``). Everything random in it (the data drawn, the initial weights,
the order of minibatches, dropout masks, augmentation) draws from its own stream, derived from
``(seed, purpose, *keys)`` by NumPy's ``SeedSequence``:

    stream_seed(seed, purpose, *keys) = SeedSequence(seed, spawn_key=(crc32(purpose), *keys)).generate_state(...)

``SeedSequence`` hashes its entropy and spawn key together, so two purposes (or two epochs of one
purpose) get unrelated streams even though they share the run seed. Seeding two generators with the
same number instead makes them produce *the same* numbers: initial weights drawn that way equal the
first training inputs, which is the mistake this module exists to prevent.

Streams are keyed by name, not by spawn order, so adding a purpose never changes the others.
Streams that are a pure function of ``(seed, purpose, epoch[, batch])`` also need no saving: a
resumed run recomputes them. Only torch's global generator (which dropout uses) has state that a
checkpoint must carry.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from divekit.errors import DivekitError

# The purposes divekit draws for. A name outside this set is a bug (a typo would silently
# create a new stream), so stream_seed refuses it.
PURPOSES = frozenset({
    "data",      # synthetic datasets, subsets and splits drawn for a run
    "init",      # initial weights
    "order",     # minibatch order and random text offsets, per epoch
    "dropout",   # torch's global generator during training: dropout masks, sampling noise
    "augment",   # training-time data augmentation, per epoch and batch
    "eval",      # randomness in evaluation (e.g. sampled examples shown in a report)
})

_MASK63 = (1 << 63) - 1  # torch.Generator.manual_seed takes a 64-bit value; stay non-negative


def check_seed(seed: int) -> int:
    """A seed is a whole number >= 0 (``SeedSequence`` entropy cannot be negative)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DivekitError(f"a seed is a whole number >= 0, got {seed!r}")
    return int(seed)


def stream_seed(seed: int, purpose: str, *keys: int) -> int:
    """The 63-bit seed of stream ``purpose`` (further split by integer ``keys``, e.g. epoch, batch)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random-stream purpose '{purpose}'; known: {', '.join(sorted(PURPOSES))}")
    if any(k < 0 for k in keys):
        raise ValueError(f"stream keys must be non-negative, got {keys}")
    spawn_key = (zlib.crc32(purpose.encode()), *(int(k) for k in keys))
    state = np.random.SeedSequence(check_seed(seed), spawn_key=spawn_key).generate_state(2, np.uint32)
    return ((int(state[1]) << 32) | int(state[0])) & _MASK63


def generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for stream ``purpose`` of run ``seed``."""
    return torch.Generator().manual_seed(stream_seed(seed, purpose, *keys))


def seed_global(seed: int, purpose: str) -> None:
    """Seed torch's global generator (used by ``nn.init`` and dropout, which take no generator)."""
    torch.manual_seed(stream_seed(seed, purpose))
