"""Inverted dropout from scratch, interchangeable with ``nn.Dropout``.

In training, each element is kept independently with probability ``1 - p`` and the survivors are
scaled up so that the expectation is unchanged:

    m_i ~ Bernoulli(1 - p)                    the keep mask
    y_i = m_i * x_i / (1 - p)                 so  E[y_i] = x_i

In evaluation the layer is the identity: the scaling already happened during training, which is
what "inverted" refers to (the original formulation scaled at test time instead). Edge rates:
``p = 0`` keeps everything (identity), ``p = 1`` drops everything (all zeros, no division by 0).

Shapes: any ``(*)`` input, output of the same shape, dtype and device.
"""

from __future__ import annotations

import torch
from torch import nn

from divekit.errors import DivekitError


class DropoutRateError(DivekitError, ValueError):
    """A rate outside ``[0, 1]``: a user error for the command line, a ``ValueError`` as in torch."""


def _check_rate(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise DropoutRateError(f"dropout rate must be in [0, 1], got {p}")


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout of ``x`` ``(*)`` at rate ``p``; the identity when not ``training``.

    The arguments before ``*`` are those of ``torch.nn.functional.dropout``. ``inplace`` writes the
    result into ``x`` (which must then not need its value for a backward pass, as in torch).
    ``generator`` draws the mask (default: the global torch generator), so a seeded generator
    reproduces the same mask. The masks differ from torch's for the same seed: torch draws them
    with its own Bernoulli kernel.
    """
    _check_rate(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        # Every unit dropped. Multiplying by a zero mask (rather than returning fresh zeros) keeps
        # the output in the autograd graph with a zero gradient, and avoids the 0 / 0 of rescaling.
        return x.mul_(0.0) if inplace else x * torch.zeros_like(x)
    u = torch.rand(x.shape, generator=generator, device=x.device)
    keep = u >= p  # P(u >= p) = 1 - p for u uniform on [0, 1)
    scale = keep.to(x.dtype) / (1.0 - p)  # m / (1 - p)
    return x.mul_(scale) if inplace else x * scale


class Dropout(nn.Module):
    """Module form of :func:`dropout`: drops in ``train()`` mode, identity in ``eval()`` mode.

    A drop-in for ``nn.Dropout(p=0.5, inplace=False)``.

    Args:
        p: probability of zeroing each element, in ``[0, 1]``.
        inplace: overwrite the input instead of allocating the output.
        generator: keyword-only, optional source of the masks (default: the global torch generator).
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        _check_rate(p)
        self.p = p
        self.inplace = inplace
        self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input``: ``(*)`` -> ``(*)``."""
        return dropout(input, self.p, self.training, self.inplace, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
