"""Inverted dropout from scratch, interchangeable with ``nn.Dropout``.

In training, each element is kept independently with probability ``1 - p`` and the survivors are
scaled up so that the expectation is unchanged:

    m_i ~ Bernoulli(1 - p)                    the keep mask
    y_i = m_i * x_i / (1 - p)                 so  E[y_i] = x_i

In evaluation the layer is the identity: the scaling already happened during training, which is
what "inverted" refers to (the original formulation scaled at test time instead). Edge rates:
``p = 0`` keeps everything (identity), ``p = 1`` drops everything (all zeros, no division by 0).

Shapes: any ``(*)`` input, output of the same shape, dtype and device.

**Packed masks** (``packed=True``). Drawing one random number per element is most of dropout's
cost on a CPU: for a small Transformer, a (32, 128, 512) mask took longer than all the matrix
products of the layer it served (docs/results/attention.md). A packed mask cuts each 64-bit draw of
the generator into four signed 16-bit lanes, each uniform on ``[-32768, 32767]``, and keeps an
element when its lane is at least ``-32768 + round(65536 p)``: a quarter of the draws. The drop
rate is then ``p`` rounded to a multiple of ``2^-16`` (at most ``7.7e-6`` away) and the survivors are
scaled by the exact ``1 / (1 - rate)``, so ``E[y_i] = x_i`` still holds exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from divekit.errors import DivekitError


class DropoutRateError(DivekitError, ValueError):
    """A rate outside ``[0, 1]``: a user error for the command line, a ``ValueError`` as in torch."""


def _check_rate(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise DropoutRateError(f"dropout rate must be in [0, 1], got {p}")


LANES = 4  # 16-bit lanes per 64-bit draw
LEVELS = 1 << 16  # values of one lane


def packed_keep_mask(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None,
                     device: torch.device | None = None) -> tuple[torch.Tensor, float]:
    """A bool keep mask of ``shape`` from 16-bit lanes of 64-bit draws, and the rate it drops at."""
    dropped = round(p * LEVELS)
    n = math.prod(shape)
    words = torch.empty((n + LANES - 1) // LANES, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None, generator=generator)  # all 64 bits: random_() alone leaves the sign bit 0
    lanes = words.view(torch.int16)[:n].view(shape)  # each lane uniform on [-32768, 32767]
    return lanes >= dropped - LEVELS // 2, dropped / LEVELS


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
            generator: torch.Generator | None = None, packed: bool = False) -> torch.Tensor:
    """Inverted dropout of ``x`` ``(*)`` at rate ``p``; the identity when not ``training``.

    The arguments before ``*`` are those of ``torch.nn.functional.dropout``. ``inplace`` writes the
    result into ``x`` (which must then not need its value for a backward pass, as in torch).
    ``generator`` draws the mask (default: the global torch generator), so a seeded generator
    reproduces the same mask. The masks differ from torch's for the same seed: torch draws them
    with its own Bernoulli kernel. ``packed`` draws a packed mask (module docstring).
    """
    _check_rate(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        # Every unit dropped. Multiplying by a zero mask (rather than returning fresh zeros) keeps
        # the output in the autograd graph with a zero gradient, and avoids the 0 / 0 of rescaling.
        return x.mul_(0.0) if inplace else x * torch.zeros_like(x)
    if packed:
        keep, p = packed_keep_mask(x.shape, p, generator, x.device)
    else:
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= p  # P(u >= p) = 1 - p, u ~ U[0, 1)
    scale = keep.to(x.dtype) / (1.0 - p)  # m / (1 - p)
    return x.mul_(scale) if inplace else x * scale


class Dropout(nn.Module):
    """Module form of :func:`dropout`: drops in ``train()`` mode, identity in ``eval()`` mode.

    A drop-in for ``nn.Dropout(p=0.5, inplace=False)``.

    Args:
        p: probability of zeroing each element, in ``[0, 1]``.
        inplace: overwrite the input instead of allocating the output.
        generator: keyword-only, optional source of the masks (default: the global torch generator).
        packed: keyword-only, draw packed masks (a quarter of the random numbers; module docstring).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, generator: torch.Generator | None = None,
                 packed: bool = False) -> None:
        super().__init__()
        _check_rate(p)
        self.p = p
        self.inplace = inplace
        self.generator = generator
        self.packed = packed

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input``: ``(*)`` -> ``(*)``."""
        return dropout(input, self.p, self.training, self.inplace, generator=self.generator, packed=self.packed)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}" + (", packed=True" if self.packed else "")


def pack_dropouts(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` inside ``model`` by a packed :class:`Dropout` of the same rate; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p, packed=True))
    return model
