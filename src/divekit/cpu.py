"""CPU settings scoped to one study, restored on exit.

``single_thread``: solving a ``(1000, 21)`` least-squares problem, stepping a 200-weight linear
model or training a 784-256-256-10 MLP on batches of 256 is near or below the size where a second
thread pays for its hand-off. When other jobs share a two-core machine, the threads of one
operation wait for each other: such loops ran up to ten times slower with two threads than with one.

``flush_denormals``: a network whose signal vanishes (a deep ReLU net initialised with std 0.01)
produces float32 gradients around 1e-40, below the smallest normal float32 (1.2e-38). x86 CPUs
compute with such subnormal numbers dozens of times slower (such a run took 60x longer here);
flushing them to zero changes the gradients by less than 1e-38 and leaves the training curves as
they were, at normal speed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    # set_flush_denormal returns whether the CPU supports it; the previous state cannot be queried,
    # so the default (off) is restored.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
